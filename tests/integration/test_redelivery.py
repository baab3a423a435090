"""At-least-once done right: a worker killed mid-workflow loses nothing and no finished
step runs again."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid

import pytest
import redis

import orchestrator
from config import Settings
from orchestrator import subsystems
from orchestrator.invocation import InvocationStatus
from tests.procs import Fleet, wait_for


def _runs(settings: Settings, tag: str) -> dict[str, int]:
    client = redis.Redis.from_url(settings.redis_url or "", decode_responses=True)
    return {k: int(v) for k, v in client.hgetall(f"test:runs:{tag}").items()}


def _steps_begun(ids: list[str]) -> int:
    inflight = subsystems.current().claims
    return sum(len(inflight.snapshot(i)[1]) + len(inflight.snapshot(i)[2]) for i in ids)


def _assert_each_step_completed_once(settings: Settings, tag: str, ids: list[str]) -> None:
    runs = _runs(settings, tag)
    expected = {f"{i}:sleep-{n}" for i in ids for n in (1, 2, 3)}
    assert set(runs) == expected
    assert all(count == 1 for count in runs.values()), runs


@pytest.mark.timeout(150)
def test_sigkilled_worker_loses_no_invocation_and_reruns_no_finished_step(
    settings: Settings, fleet: Fleet
) -> None:
    tag = uuid.uuid4().hex[:8]
    victim = fleet.start("agents", concurrency=2)
    ids = [orchestrator.submit("test-slow", {"tag": tag, "seconds": 1.0}) for _ in range(4)]
    assert wait_for(lambda: _steps_begun(ids) >= 3, timeout=20)
    victim.kill()  # the whole worker: main process and pool, mid-step
    assert not victim.alive
    unfinished = [i for i in ids if not orchestrator.get(i).finished]
    assert unfinished, "the kill came too late to test anything"

    fleet.start("agents", concurrency=2)
    finished = [orchestrator.wait(i, timeout=90) for i in ids]
    assert [f.status for f in finished] == [InvocationStatus.SUCCEEDED] * 4
    _assert_each_step_completed_once(settings, tag, ids)


@pytest.mark.timeout(90)
def test_sigkilled_pool_process_is_replaced_and_its_step_taken_over(
    settings: Settings, fleet: Fleet
) -> None:
    tag = uuid.uuid4().hex[:8]
    worker = fleet.start("agents", concurrency=1)
    invocation_id = orchestrator.submit("test-slow", {"tag": tag, "seconds": 2.0})
    assert wait_for(lambda: _steps_begun([invocation_id]) >= 1, timeout=20)
    children = subprocess.run(
        ["pgrep", "-P", str(worker.pid)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert children
    os.kill(int(children[0]), signal.SIGKILL)  # worker lost: the message is requeued
    finished = orchestrator.wait(invocation_id, timeout=60)
    assert finished.status is InvocationStatus.SUCCEEDED
    _assert_each_step_completed_once(settings, tag, [invocation_id])
    assert worker.alive
