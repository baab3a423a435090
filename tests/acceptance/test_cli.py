"""The CLI as users run it: real processes, exit codes, messages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

import orchestrator
from config import Settings
from orchestrator.invocation import InvocationStatus

REPO = Path(__file__).resolve().parents[2]
ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")


def _run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ORCHESTRATOR, *args],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def test_bad_input_prints_the_problem_and_exits_2(settings: Settings) -> None:
    env = settings.environment()
    unknown = _run(["submit", "no-such-flow", "{}"], env)
    assert unknown.returncode == 2
    assert "no workflow named 'no-such-flow'" in unknown.stderr
    invalid = _run(["submit", "pipeline-5", '{"n": -1}'], env)
    assert invalid.returncode == 2
    assert "n: Input should be greater than or equal to 0" in invalid.stderr
    not_json = _run(["submit", "pipeline-5", "{n: 1"], env)
    assert not_json.returncode == 2 and "PAYLOAD_JSON is not valid JSON" in not_json.stderr
    bad_setting = _run(["status"], env | {"ORCH_LLM_RPM": "0"})
    assert bad_setting.returncode == 2 and "ORCH_LLM_RPM" in bad_setting.stderr
    assert redis.Redis.from_url(settings.redis_url or "").llen("agents") == 0


def test_backpressure_prints_retry_after_and_exits_3(settings: Settings) -> None:
    env = settings.environment()
    for i in range(3):
        assert _run(["submit", "pipeline-5", f'{{"n": {i}}}'], env).returncode == 0
    refused = _run(
        ["submit", "pipeline-5", '{"n": 9}'], env | {"ORCH_MAX_QUEUE_DEPTHS": "agents=2"}
    )
    assert refused.returncode == 3
    assert "retry-after:" in refused.stderr and "queue 'agents' holds 3" in refused.stderr


def test_submit_wait_prints_the_invocation(settings: Settings, fleet: object) -> None:
    fleet.start("agents", concurrency=1)  # type: ignore[attr-defined]
    done = _run(
        ["submit", "pipeline-5", '{"n": 1}', "--wait", "--timeout", "30"], settings.environment()
    )
    assert done.returncode == 0, done.stderr
    assert '"status": "succeeded"' in done.stdout and '"n": 6' in done.stdout
    status = _run(["status", "--json"], settings.environment())
    assert status.returncode == 0 and '"succeeded"' in status.stdout


def test_up_starts_a_fleet_and_ctrl_c_stops_all(settings: Settings, tmp_path: Path) -> None:
    env = {
        **os.environ,
        **settings.environment(),
        "PYTHONPATH": str(REPO),
        "ORCH_DATA_DIR": str(tmp_path / "data"),
        "ORCH_AGENTS_CONCURRENCY": "1",
        "ORCH_LLM_WORKER_CONCURRENCY": "2",
        "ORCH_TOOLS_WORKER_CONCURRENCY": "2",
    }
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [ORCHESTRATOR, "up"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while b"fleet up" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert "stopped" in text
    assert (
        subprocess.run(["pgrep", "-f", str(tmp_path / "data")], capture_output=True).returncode == 1
    )


def _submitted(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_submit_reads_a_payload_file_over_the_argument_limit(
        settings: Settings, tmp_path: Path) -> None:
    tag = "x" * (300 * 1024)  # past what one argv string may hold (128 KiB)
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps({"tag": tag, "seconds": 0}))
    env = settings.environment() | {"ORCH_MAX_PAYLOAD_BYTES": str(1024 * 1024)}
    invocation_id = _submitted(_run(["submit", "test-slow", f"@{payload}"], env))
    assert orchestrator.get(invocation_id).payload["tag"] == tag
    too_large = _run(["submit", "test-slow", f"@{payload}"], settings.environment())
    assert too_large.returncode == 2 and "over the limit" in too_large.stderr


def test_submit_reads_the_payload_from_stdin(settings: Settings) -> None:
    out = subprocess.run(
        [ORCHESTRATOR, "submit", "test-slow", "-"], input='{"tag": "from-stdin"}',
        env={**os.environ, **settings.environment(), "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert orchestrator.get(_submitted(out)).payload["tag"] == "from-stdin"


def test_submit_of_a_missing_or_broken_file_exits_2_naming_it(
        settings: Settings, tmp_path: Path) -> None:
    missing = _run(["submit", "test-slow", f"@{tmp_path / 'nope.json'}"],
                   settings.environment())
    assert missing.returncode == 2
    assert "cannot read the payload file" in missing.stderr
    assert "nope.json" in missing.stderr and "No such file or directory" in missing.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{tag: 1")
    bad = _run(["submit", "test-slow", f"@{broken}"], settings.environment())
    assert bad.returncode == 2 and "broken.json' is not valid JSON" in bad.stderr
    assert redis.Redis.from_url(settings.redis_url or "").llen("agents") == 0


def test_submit_wait_timing_out_prints_the_id_and_exits_4(settings: Settings) -> None:
    # No worker runs: the invocation stays queued, and goes on after the CLI gives up.
    waited = _run(["submit", "test-slow", '{"tag": "t", "seconds": 0}', "--wait",
                   "--timeout", "1"], settings.environment())
    assert waited.returncode == 4, waited.stderr
    invocation_id = waited.stdout.strip()
    assert "timed out" in waited.stderr and invocation_id in waited.stderr
    assert orchestrator.get(invocation_id).status is InvocationStatus.QUEUED
