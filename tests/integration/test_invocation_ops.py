"""Operating on invocations as an operator does: dead letters and replay, cancel,
inspect and listing; from Python and from the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest
import redis
from typer.testing import CliRunner

import orchestrator
from config import Settings
from orchestrator import subsystems
from orchestrator.cli.app import app
from orchestrator.errors import InvalidState, UnknownInvocation
from orchestrator.invocation import InvocationStatus
from tests.procs import Fleet, wait_for

runner = CliRunner()


def _cli(args: list[str], settings: Settings) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it (its exit codes come from ``main``)."""
    return subprocess.run([sys.executable, "-m", "orchestrator.cli.app", *args],
                          env={**os.environ, **settings.environment()},
                          capture_output=True, text=True, timeout=60)


def _client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url or "", decode_responses=True)


def _runs(settings: Settings, tag: str) -> dict[str, int]:
    return {k: int(v) for k, v in _client(settings).hgetall(f"test:probe:{tag}").items()}


@pytest.mark.timeout(120)
def test_failed_invocation_is_a_dead_letter_replayed_without_rerunning_done_steps(
    settings: Settings, fleet: Fleet
) -> None:
    fleet.start("agents", concurrency=1)
    tag = uuid.uuid4().hex[:8]
    invocation_id = orchestrator.submit("test-probe", {"tag": tag, "last": "broken"})
    failed = orchestrator.wait(invocation_id, timeout=60)
    assert failed.status is InvocationStatus.FAILED
    env = settings.environment()

    listed = runner.invoke(app, ["dlq", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    letters = {d["id"]: d for d in json.loads(listed.output)}
    assert letters[invocation_id]["cause"] == "step raised RuntimeError"
    assert letters[invocation_id]["workflow"] == "test-probe"
    assert letters[invocation_id]["failed_at"]

    _client(settings).set(f"test:fixed:{tag}", "1")  # the fix is deployed
    replayed = runner.invoke(app, ["dlq", "replay", invocation_id], env=env)
    assert replayed.exit_code == 0, replayed.output
    done = orchestrator.wait(invocation_id, timeout=60)
    assert done.status is InvocationStatus.SUCCEEDED
    assert done.replays == 1
    assert _runs(settings, tag) == {f"{invocation_id}:first": 1, f"{invocation_id}:last": 1}
    after = json.loads(runner.invoke(app, ["dlq", "list", "--json"], env=env).output)
    assert invocation_id not in {d["id"] for d in after}

    shown = runner.invoke(app, ["inspect", invocation_id, "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert [s["status"] for s in data["steps"]] == ["done", "done"]
    events = [e["event"] for e in data["timeline"]]
    assert events[0] == "submitted" and events[-1] == "ended succeeded"
    assert any(e.startswith("replayed") for e in events)


@pytest.mark.timeout(60)
def test_cancelled_invocation_runs_no_further_step(settings: Settings, fleet: Fleet) -> None:
    tag = uuid.uuid4().hex[:8]
    invocation_id = orchestrator.submit("test-probe", {"tag": tag})
    cancelled = orchestrator.cancel(invocation_id, reason="customer withdrew")
    assert cancelled.status is InvocationStatus.CANCELLED
    assert cancelled.error == "customer withdrew"
    fleet.start("agents", concurrency=1)
    # Its message is still queued: the worker takes it and stops at the claim.
    assert wait_for(lambda: _client(settings).llen("agents") == 0, timeout=20)
    time.sleep(1)
    assert _runs(settings, tag) == {}
    assert orchestrator.get(invocation_id).status is InvocationStatus.CANCELLED
    with pytest.raises(InvalidState, match="cancelled already"):
        orchestrator.cancel(invocation_id)


@pytest.mark.timeout(90)
def test_cancelled_invocation_can_be_replayed(settings: Settings, fleet: Fleet) -> None:
    tag = uuid.uuid4().hex[:8]
    invocation_id = orchestrator.submit("test-probe", {"tag": tag})
    orchestrator.cancel(invocation_id)
    fleet.start("agents", concurrency=1)
    assert orchestrator.replay(invocation_id) == invocation_id
    assert orchestrator.wait(invocation_id, timeout=60).status is InvocationStatus.SUCCEEDED
    assert set(_runs(settings, tag).values()) == {1}


def test_replay_and_cancel_refuse_what_they_cannot_do(settings: Settings) -> None:
    with pytest.raises(UnknownInvocation):
        orchestrator.replay(str(uuid.uuid4()))
    queued = orchestrator.submit("test-probe", {"tag": "x"})
    with pytest.raises(InvalidState, match="only a failed or cancelled"):
        orchestrator.replay(queued)
    unknown = _cli(["inspect", str(uuid.uuid4())], settings)
    assert unknown.returncode == 2 and "no invocation with id" in unknown.stderr


def test_invocations_are_listed_by_status_and_workflow(settings: Settings) -> None:
    ids = [orchestrator.submit("test-probe", {"tag": f"l{i}"}) for i in range(3)]
    orchestrator.cancel(ids[0])
    queued = orchestrator.invocations(status="queued", workflow="test-probe")
    assert {i.id for i in queued} >= set(ids[1:]) and ids[0] not in {i.id for i in queued}
    assert ids[0] in {i.id for i in orchestrator.invocations(status="cancelled")}
    env = settings.environment()
    listed = runner.invoke(app, ["invocations", "--status", "queued", "--since", "1h",
                                 "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert set(ids[1:]) <= {i["id"] for i in json.loads(listed.output)}
    bad = _cli(["invocations", "--status", "lost"], settings)
    assert bad.returncode == 2 and "statuses: queued" in bad.stderr


@pytest.mark.timeout(120)
def test_cancel_stops_an_llm_call_waiting_in_the_limiter(
    settings: Settings, fleet: Fleet
) -> None:
    from pydantic import SecretStr

    from config.settings import SIMULATED_LLM_KEYS
    from orchestrator.devstack.simulators.llm_provider import LLMSimConfig, create_app
    from orchestrator.devstack.simulators.server import start_server

    handle = start_server(create_app(LLMSimConfig(keys=SIMULATED_LLM_KEYS, latency=2.0,
                                                  jitter=0.0)))
    try:
        configured = settings.model_copy(update={
            "llm_base_url": f"{handle.url}/v1",
            "llm_api_keys": [SecretStr(k) for k in SIMULATED_LLM_KEYS[:1]],
            "llm_concurrency": 1})
        orchestrator.configure(configured)
        fleet.env.update(configured.environment())
        fleet.start("llm", pool="threads", concurrency=4)
        # One call at a time, 2 s each: the third, submitted once the first two have
        # begun, waits in the limiter behind them for about 4 s.
        ids = [orchestrator.submit("llm-ask", {"question": f"q{i}"}) for i in range(2)]
        claims = subsystems.current().claims
        assert wait_for(lambda: all(claims.snapshot(i)[2] for i in ids), timeout=20)
        ids.append(orchestrator.submit("llm-ask", {"question": "q2"}))
        assert wait_for(lambda: bool(claims.snapshot(ids[2])[2]), timeout=20)
        time.sleep(0.5)
        started = time.monotonic()
        cancelled = orchestrator.cancel(ids[2], reason="no longer needed")
        assert cancelled.status is InvocationStatus.CANCELLED
        done = [orchestrator.wait(i, timeout=60) for i in ids[:2]]
        assert [d.status for d in done] == [InvocationStatus.SUCCEEDED] * 2
        requests = httpx.get(f"{handle.url}/stats").json()["totals"]["requests"]
        assert requests == 2, "the cancelled call must never reach the provider"
        assert time.monotonic() - started < 10
        assert orchestrator.get(ids[2]).status is InvocationStatus.CANCELLED
    finally:
        handle.stop()
