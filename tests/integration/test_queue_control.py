"""Queue control as an operator uses it during an incident: pause, drain (and park),
resume and purge, against real workers, Redis and PostgreSQL. Every step's side effect
is counted (``test:probe:<tag>``), so "exactly once" is checked, not assumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import redis

import orchestrator
from config import Settings
from orchestrator import subsystems
from orchestrator.invocation import InvocationStatus
from orchestrator.ops.queues import QueueControl
from tests.procs import Fleet, wait_for

REPO = Path(__file__).resolve().parents[2]
ORCHESTRATOR = str(Path(sys.executable).parent / "orchestrator")


def _control() -> QueueControl:
    rt = subsystems.current().runtime
    return QueueControl(rt.redis, rt.producer, inspect_timeout=0.5)


def _cli(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ORCHESTRATOR, *args],
                          env={**os.environ, **settings.environment(), "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _runs(settings: Settings, tag: str) -> dict[str, int]:
    client = redis.Redis.from_url(settings.redis_url or "", decode_responses=True)
    return {k: int(v) for k, v in client.hgetall(f"test:probe:{tag}").items()}


def _submit(tag: str, n: int, **payload: object) -> list[str]:
    return [orchestrator.submit("test-probe", {"tag": tag, **payload}) for _ in range(n)]


def _consumers(queue: str) -> list[str]:
    return (_control().consumers() or {}).get(queue, [])


def _first_started(invocation_id: str) -> datetime:
    started = orchestrator.get(invocation_id).steps[0].started_at
    assert started is not None
    return started


def _all_succeeded_once(settings: Settings, tag: str, ids: list[str]) -> None:
    done = [orchestrator.wait(i, timeout=90) for i in ids]
    assert [d.status for d in done] == [InvocationStatus.SUCCEEDED] * len(ids)
    runs = _runs(settings, tag)
    expected = {f"{i}:{step}" for i in ids for step in ("first", "last")}
    assert set(runs) == expected  # every step ran ...
    assert set(runs.values()) == {1}  # ... exactly once


@pytest.mark.timeout(120)
def test_pause_holds_across_a_worker_restart_then_resume_runs_all(
    settings: Settings, fleet: Fleet
) -> None:
    worker = fleet.start("agents", concurrency=2)
    control = _control()
    pause, created = control.pause("agents", by="test@ci", reason="bad deploy")
    assert created and pause.reason == "bad deploy"
    assert wait_for(lambda: not _consumers("agents"), timeout=10)
    tag = uuid.uuid4().hex[:8]
    ids = _submit(tag, 6)  # submits still succeed while paused
    time.sleep(2.5)
    assert _runs(settings, tag) == {} and control.depth("agents") == 6

    worker.stop()  # a worker restarted during the pause takes nothing either
    fleet.start("agents", concurrency=2)
    time.sleep(2.5)
    assert _runs(settings, tag) == {} and control.depth("agents") == 6
    assert not _consumers("agents")
    assert {orchestrator.get(i).status for i in ids} == {InvocationStatus.QUEUED}

    resumed = control.resume("agents")
    assert resumed.was_paused and resumed.unparked == 0
    _all_succeeded_once(settings, tag, ids)
    assert control.paused() == {}


@pytest.mark.timeout(180)
def test_pause_drain_and_resume_on_a_loaded_queue_run_each_step_once(
    settings: Settings, fleet: Fleet
) -> None:
    fleet.start("agents", concurrency=2)
    tag = uuid.uuid4().hex[:8]
    ids = _submit(tag, 24, first="sleep", last="sleep", seconds=0.3)
    assert wait_for(lambda: len(_runs(settings, tag)) >= 2, timeout=30)

    drained = _cli(settings, "drain", "agents", "--timeout", "60", "--reason", "incident 42")
    assert drained.returncode == 0, drained.stderr
    assert "drained" in drained.stdout
    control = _control()
    state = control.in_flight("agents")
    assert state.total == 0 and not state.consumers
    assert control.paused()["agents"].reason == "incident 42"
    status = json.loads(_cli(settings, "status", "--json").stdout)
    assert status["queues"]["agents"]["paused"] is True
    assert status["queues"]["agents"]["reason"] == "incident 42"
    assert "incident 42" in _cli(settings, "status").stdout
    ran = len(_runs(settings, tag))
    assert 0 < ran < 48
    time.sleep(2)
    assert len(_runs(settings, tag)) == ran  # nothing of the queue runs while drained

    resumed = _cli(settings, "resume", "agents")
    assert resumed.returncode == 0, resumed.stderr
    _all_succeeded_once(settings, tag, ids)


@pytest.mark.timeout(180)
def test_drain_park_then_redeploy_and_resume_run_the_parked_first(
    settings: Settings, fleet: Fleet
) -> None:
    worker = fleet.start("agents", concurrency=1)
    tag = uuid.uuid4().hex[:8]
    parked_ids = _submit(tag, 10, first="sleep", seconds=0.2)
    assert wait_for(lambda: len(_runs(settings, tag)) >= 1, timeout=30)
    control = _control()
    drained = control.drain("agents", by="test@ci", park=True, timeout=60, interval=0.2)
    assert drained.drained and drained.parked > 0
    assert control.depth("agents") == 0 and control.parked("agents") == drained.parked

    # Parked invocations wait on the operator, past ORCH_STALL_SECONDS: the reconciler
    # leaves them (an empty queue would otherwise make them look lost).
    orchestrator.configure(settings.model_copy(update={"stall_seconds": 1}))
    time.sleep(1.5)
    report = subsystems.current().reconciler().reconcile_once()
    # (Invocations other tests left unfinished in this database may be reconciled too.)
    assert report.checked > 0
    assert not set(parked_ids) & {*report.redispatched, *report.failed}

    # "Redeploy a fixed step": the old worker goes, a new one comes; newer work arrives.
    worker.stop()
    fleet.start("agents", concurrency=1)
    newer_ids = _submit(tag, 4)
    time.sleep(2)
    assert control.parked("agents") == drained.parked and control.depth("agents") == 4

    resumed = control.resume("agents")
    assert resumed.unparked == drained.parked and control.parked("agents") == 0
    _all_succeeded_once(settings, tag, parked_ids + newer_ids)
    # One worker slot, so start order is queue order: every parked first step ran
    # before the first of the newer ones.
    parked_starts = [_first_started(i) for i in parked_ids]
    assert max(parked_starts) < min(_first_started(i) for i in newer_ids)


@pytest.mark.timeout(120)
def test_purge_cancels_every_purged_invocation_with_the_reason(
    settings: Settings, fleet: Fleet
) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = _submit(tag, 5)  # no worker yet: all wait in the queue

    counted = _cli(settings, "purge", "agents")
    assert counted.returncode == 0, counted.stderr
    assert "5 waiting messages" in counted.stdout
    assert _control().depth("agents") == 5  # without --yes nothing moves

    purged = _cli(settings, "purge", "agents", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert "5 invocations cancelled" in purged.stdout
    assert _control().depth("agents") == 0
    for invocation_id in ids:
        invocation = orchestrator.get(invocation_id)
        assert invocation.status is InvocationStatus.CANCELLED
        assert invocation.error is not None
        assert invocation.error.startswith("purged from queue agents by ")

    fleet.start("agents", concurrency=1)
    time.sleep(2)
    assert _runs(settings, tag) == {}


@pytest.mark.timeout(120)
def test_resume_does_not_make_a_worker_of_another_profile_consume_the_queue(
    settings: Settings, fleet: Fleet
) -> None:
    agents = fleet.start("agents", concurrency=1)
    tools = fleet.start("tools", pool="threads", concurrency=2)
    control = _control()
    control.pause("tools", by="test@ci")
    assert wait_for(lambda: not _consumers("tools"), timeout=10)
    control.resume("tools")
    assert wait_for(lambda: _consumers("tools") == [tools.node_name], timeout=10)
    time.sleep(1.5)  # a few more looks at the pause state by each worker
    consumers = _control().consumers() or {}
    assert consumers.get("tools") == [tools.node_name]
    assert consumers.get("agents") == [agents.node_name]
    assert "llm" not in consumers


@pytest.mark.timeout(120)
def test_purge_after_drain_park_leaves_every_invocation_ended_none_twice(
    settings: Settings, fleet: Fleet
) -> None:
    worker = fleet.start("agents", concurrency=1)
    tag = uuid.uuid4().hex[:8]
    ids = _submit(tag, 12, first="sleep", seconds=0.2)
    assert wait_for(lambda: len(_runs(settings, tag)) >= 3, timeout=30)
    control = _control()
    drained = control.drain("agents", by="test@ci", park=True, timeout=60, interval=0.2)
    assert drained.drained and drained.parked > 0
    worker.stop()

    purged = control.purge("agents", by="ann@ops-1")
    assert purged.messages == drained.parked and purged.foreign == 0
    assert control.parked("agents") == 0 and control.depth("agents") == 0
    runs = _runs(settings, tag)
    statuses = {}
    for invocation_id in ids:
        invocation = orchestrator.get(invocation_id)
        statuses[invocation_id] = invocation.status
        if invocation.status is InvocationStatus.CANCELLED:
            assert invocation.error == "purged from queue agents by ann@ops-1"
            assert f"{invocation_id}:last" not in runs
        else:
            assert invocation.status is InvocationStatus.SUCCEEDED
    assert set(statuses.values()) <= {InvocationStatus.CANCELLED, InvocationStatus.SUCCEEDED}
    assert sorted(purged.cancelled) == sorted(
        i for i, s in statuses.items() if s is InvocationStatus.CANCELLED)
    # Some were cancelled at their second step: the purge read later steps' messages too.
    assert any(f"{i}:first" in runs for i in purged.cancelled)
    assert set(runs.values()) == {1}


@pytest.mark.timeout(120)
def test_drain_exits_4_when_its_timeout_passes_and_0_once_the_step_ends(
    settings: Settings, fleet: Fleet
) -> None:
    fleet.start("agents", concurrency=1)
    tag = uuid.uuid4().hex[:8]
    [invocation_id] = _submit(tag, 1, first="sleep", seconds=8.0)
    store = subsystems.current().store
    assert wait_for(lambda: store.status(invocation_id) is InvocationStatus.RUNNING,
                    timeout=20)
    late = _cli(settings, "drain", "agents", "--timeout", "1")
    assert late.returncode == 4, late.stderr
    assert "timed out" in late.stderr and "1 in flight" in late.stderr
    drained = _cli(settings, "drain", "agents", "--timeout", "60")
    assert drained.returncode == 0, drained.stderr
    assert _runs(settings, tag) == {f"{invocation_id}:first": 1}  # its next step waits
    _control().resume("agents")
    assert orchestrator.wait(invocation_id, timeout=30).status is InvocationStatus.SUCCEEDED
