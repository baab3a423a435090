"""The consumer liveness step's clock, and which exits the local fleet's supervisor
restarts (no worker process: the decisions only)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

import orchestrator
from config import Settings
from orchestrator import runtime
from orchestrator.devstack.processes import ChildProcess
from workers.liveness import ConsumerLiveness


@pytest.fixture
def step() -> Iterator[ConsumerLiveness]:
    orchestrator.configure(Settings(redis_url="redis://127.0.0.1:9/0",
                                    worker_stall_exit_seconds=5))
    yield ConsumerLiveness(SimpleNamespace())
    runtime.current().close()


def test_stall_exit_seconds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="worker_stall_exit_seconds"):
        Settings(worker_stall_exit_seconds=0)


def test_consumer_never_started_is_not_stalled(step: ConsumerLiveness) -> None:
    assert step.stalled_for(SimpleNamespace(connection=None), now=1000.0) is None


def test_stall_counts_from_the_consumer_stopping_until_it_starts_again(
    step: ConsumerLiveness, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = SimpleNamespace(connection=object())
    monkeypatch.setattr(step, "_thread", object())  # no watching thread in a unit test
    step.start(consumer)
    assert step.stalled_for(consumer, now=10.0) is None
    monkeypatch.setattr("workers.liveness.time", SimpleNamespace(monotonic=lambda: 100.0))
    step.stop(consumer)
    assert step.stalled_for(consumer, now=160.0) == 60.0
    step.start(consumer)
    assert step.stalled_for(consumer, now=200.0) is None


def test_connection_dropped_without_the_steps_stopping_counts_as_stalled(
    step: ConsumerLiveness, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = SimpleNamespace(connection=object())
    monkeypatch.setattr(step, "_thread", object())
    step.start(consumer)
    consumer.connection = None  # what Celery's error path leaves when it gives up
    assert step.stalled_for(consumer, now=50.0) == 0.0
    assert step.stalled_for(consumer, now=80.0) == 30.0


def _child(tmp_path: Path, code: int) -> ChildProcess:
    return ChildProcess([sys.executable, "-c", f"raise SystemExit({code})"], {},
                        log_path=tmp_path / "child.log", name="child")


def test_a_process_that_exits_by_itself_is_restartable(tmp_path: Path) -> None:
    child = _child(tmp_path, 1)
    child._spawn().wait(10)
    assert child.exited_on_its_own and child.returncode == 1


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_process_stopped_on_purpose_is_left_alone(tmp_path: Path, how: str) -> None:
    child = ChildProcess([sys.executable, "-c", "import time; time.sleep(30)"], {},
                         log_path=tmp_path / "child.log", name="child")
    proc = child._spawn()
    getattr(child, how)()
    assert proc.poll() is not None
    assert not child.exited_on_its_own
