"""A worker's log lines as an operator collects them: ORCH_LOG_FORMAT=json."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

import orchestrator
from config import Settings
from orchestrator.devstack.processes import CommandProcess
from orchestrator.devstack.servers.ports import free_port
from orchestrator.invocation import InvocationStatus
from tests.procs import Fleet


def test_json_worker_lines_name_the_step_and_hold_no_payload(
        settings: Settings, fleet: Fleet) -> None:
    fleet.env["ORCH_LOG_FORMAT"] = "json"
    worker = fleet.start("agents", concurrency=1)
    failing = orchestrator.submit("test-fail", {"reason": "boom"})
    passing = orchestrator.submit("pipeline-5", {"n": 987_654_321})
    assert orchestrator.wait(failing, timeout=30).status is InvocationStatus.FAILED
    assert orchestrator.wait(passing, timeout=30).status is InvocationStatus.SUCCEEDED
    fleet.stop_all()
    text = worker.log_path.read_text()
    # Celery prints a few lines itself, outside logging: a warning when run as root,
    # before logging is set up, and "worker: Warm shutdown" at the end.
    logged = text[text.index("{"):].splitlines()
    lines = [json.loads(line) for line in logged if line and not line.startswith("worker: ")]
    assert any(line["message"].endswith(" ready.") for line in lines)
    failed = [line for line in lines if line.get("invocation_id") == failing
              and line["level"] == "ERROR" and "failed" in line["message"]]
    assert failed, text
    assert {k: failed[0][k] for k in ("workflow", "step", "queue")} == {
        "workflow": "test-fail", "step": "explode", "queue": "agents"}
    # Celery's own line of each step task names the step too.
    succeeded = [line for line in lines if line.get("invocation_id") == passing
                 and "succeeded" in line["message"]]
    assert [line["step"] for line in succeeded] == [f"step-{i}" for i in range(1, 6)]
    # The payload and every output of the passing run (n + 1 ... n + 5) stay out.
    assert not any(str(987_654_321 + i) in text for i in range(6))


def test_json_long_running_commands_write_one_object_a_line(
        settings: Settings, tmp_path: Path) -> None:
    """``metrics`` (its scrape failing on PostgreSQL) and ``reconciler``, in json."""
    port = free_port()
    env = {**settings.environment(), "ORCH_LOG_FORMAT": "json",
           "ORCH_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:9/nowhere"}
    metrics = CommandProcess(env, "metrics", log_dir=tmp_path, args=["--port", str(port)])
    reconciler = CommandProcess(env, "reconciler", log_dir=tmp_path)
    try:
        metrics.start()
        scrape = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
        assert 'orchestrator_scrape_source_up{source="postgresql"} 0.0' in scrape.text
        reconciler.start()
    finally:
        metrics.stop()
        reconciler.stop()
    for process in (metrics, reconciler):
        lines = [json.loads(line) for line in process.log_path.read_text().splitlines()]
        assert lines and all(line["ts"] and line["level"] for line in lines)
    messages = [line["message"] for line in
                map(json.loads, metrics.log_path.read_text().splitlines())]
    assert any("the postgresql part of this scrape is missing" in m for m in messages)
    assert not any("postgres@127.0.0.1:9" in m and ":**@" not in m for m in messages)
