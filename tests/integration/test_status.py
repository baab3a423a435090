"""``orchestrator status``: one screen an operator reads during an incident."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
import redis

import orchestrator
from config import Settings
from orchestrator.invocation import InvocationStatus
from tests.procs import Fleet


def _status(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli.app", "status", *args],
                          env={**os.environ, **settings.environment()}, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.timeout(90)
def test_status_shows_workers_recent_work_stalls_dead_letters_and_dependencies(
    settings: Settings, fleet: Fleet
) -> None:
    configured = settings.model_copy(update={"stall_seconds": 1})
    orchestrator.configure(configured)
    fleet.env.update(configured.environment())
    fleet.start("agents", concurrency=1)
    failed = orchestrator.wait(orchestrator.submit(
        "test-probe", {"tag": uuid.uuid4().hex[:8], "first": "broken"}), timeout=30)
    assert failed.status is InvocationStatus.FAILED
    fleet.stop_all()
    stalled = orchestrator.submit("test-probe", {"tag": uuid.uuid4().hex[:8]})
    redis.Redis.from_url(settings.redis_url or "").delete("agents")  # its message is gone
    time.sleep(1.5)

    shown = _status(configured, "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["invocations_last_hour"]["failed"] >= 1
    assert data["dead_letters_last_hour"]["step raised RuntimeError"] >= 1
    assert stalled in data["stalled"]
    assert {k["provider"] for k in data["llm_keys"]} == {"primary"}
    assert all("key" in k and k["key"].startswith("k-") for k in data["llm_keys"])
    assert all(s["dirty"] == 0 for s in data["state_shards"].values())
    assert data["queues"]["agents"]["consumers"] == []

    table = _status(configured)
    assert table.returncode == 0, table.stderr
    for title in ("queues", "workers online", "invocations", "stalled", "LLM keys",
                  "memory layer", "dead letters"):
        assert title in table.stdout, title


@pytest.mark.timeout(60)
def test_status_names_each_worker_with_its_queues_pool_and_concurrency(
    settings: Settings, fleet: Fleet
) -> None:
    fleet.start("tools", pool="threads", concurrency=3)
    data = json.loads(_status(settings, "--json").stdout)
    (worker,) = [w for w in data["workers"] if w["queues"] == ["tools"]]
    assert worker["pool"] == "thread" and worker["concurrency"] == 3
