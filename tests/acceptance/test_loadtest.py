"""``orchestrator loadtest``, as a user runs it: a short pilot-12k run of the production
profile under every scheduled fault, the Redis restart included, accounts for every
submitted invocation, loses none and loses no customer-record update, and writes its JSON
and chart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(540)
def test_short_run_of_the_production_profile_accounts_for_every_invocation(
    tmp_path: Path,
) -> None:
    # The lab brings its own Redis, PostgreSQL and simulators: no ORCH_* of the caller.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["ORCH_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.app", "loadtest", "pilot-12k",
         "--profile", "production", "--minutes", "3", "--rate", "0.5", "--seed", "3",
         "--out", str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=520)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "one lab minute stands for 480 minutes of the day" in done.stdout
    assert "pilot-12k · production" in done.stdout
    data = json.loads((tmp_path / "pilot-12k.json").read_text())
    assert (tmp_path / "pilot-12k.png").stat().st_size > 10_000
    production = data["profiles"]["production"]
    summary, outcomes = production["summary"], production["outcomes"]
    # Every scheduled fault was applied (start and end), none failed to apply.
    assert len(production["faults_applied"]) == 2 * len(data["faults"]) == 14
    assert summary["fault_errors"] == []
    # Every submitted invocation accounted for, none lost, no record update lost.
    assert summary["submitted"] == len(outcomes) > 30
    assert sorted(o["index"] for o in outcomes) == list(range(len(outcomes)))
    counted = (summary["succeeded"] + summary["degraded"] + summary["failed"]
               + summary["refused_backpressure"] + summary["submit_errors"]
               + summary["cancelled"] + summary["lost"])
    assert counted == summary["submitted"]
    assert summary["lost"] == 0
    assert summary["lost_state_updates"] == 0 and summary["extra_state_updates"] == 0
    assert summary["surfaced_429_failures"] == 0
    assert all(o["finished"] is not None for o in outcomes if o["fate"] != "refused")
