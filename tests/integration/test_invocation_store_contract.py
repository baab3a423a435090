"""The invocation store's rules, run on both stores: PostgreSQL (store/invocations.py)
and the in-memory one unit tests use, so the fake cannot drift from the SQL.

The PostgreSQL database is shared by the session's tests, so every assertion here looks
at this test's own invocations only.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from orchestrator import subsystems
from orchestrator.invocation import Invocation, InvocationStatus, StepStatus
from orchestrator.store.invocations import Unfinished
from orchestrator.testing import ManualClock, MemoryInvocationStore


class Store(Protocol):
    def create(self, *, invocation_id: str, workflow: str, payload_json: str,
               step_count: int, idempotency_key: str | None,
               ) -> tuple[str, InvocationStatus | None]: ...

    def delete(self, invocation_id: str) -> None: ...

    def complete(self, invocation_id: str, *, status: InvocationStatus, output: Any,
                 error: str | None, steps: list[dict[str, Any]]) -> bool: ...

    def mark_running(self, invocation_ids: list[str]) -> None: ...

    def status(self, invocation_id: str) -> InvocationStatus | None: ...

    def get(self, invocation_id: str) -> Invocation | None: ...

    def status_of(self, invocation_ids: list[str]) -> dict[str, InvocationStatus]: ...

    def finished_count(self, invocation_ids: list[str]) -> int: ...

    def unfinished_before(self, seconds: float, *, after: Unfinished | None = None,
                          limit: int = 200) -> list[Unfinished]: ...


@dataclass
class Backend:
    store: Store
    wait: Callable[[float], None]


@pytest.fixture(params=["memory", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        clock = ManualClock()
        yield Backend(MemoryInvocationStore(clock), clock.advance)
        return
    request.getfixturevalue("settings")
    yield Backend(subsystems.current().store, time.sleep)


def _id() -> str:
    return str(uuid.uuid4())


def _create(store: Store, invocation_id: str, key: str | None = None,
            payload: dict[str, Any] | None = None) -> tuple[str, InvocationStatus | None]:
    return store.create(invocation_id=invocation_id, workflow="wf-contract",
                        payload_json=json.dumps(payload or {"ticket": "T-1"}), step_count=2,
                        idempotency_key=key)


def _step(index: int, *, status: str = "done", output: Any = None, started_ms: int,
          pt: int = 0, ct: int = 0, fallback: bool = False) -> dict[str, Any]:
    return {"idx": index, "name": f"s{index}", "kind": "python", "status": status,
            "attempts": index + 1, "output": output, "error": None, "fallback": fallback,
            "pt": pt, "ct": ct, "started_ms": started_ms, "finished_ms": started_ms + 250}


def test_created_invocation_is_queued_with_its_payload(backend: Backend) -> None:
    inv = _id()
    assert _create(backend.store, inv, payload={"ticket": "T-9", "n": [1, 2]}) == (inv, None)
    found = backend.store.get(inv)
    assert found is not None
    assert (found.status, found.workflow, found.payload, found.steps) == (
        InvocationStatus.QUEUED, "wf-contract", {"ticket": "T-9", "n": [1, 2]}, ())
    assert (found.output, found.error, found.finished_at, found.idempotency_key) == (
        None, None, None, None)


def test_repeated_idempotency_key_returns_the_first_invocation(backend: Backend) -> None:
    first, key = _id(), f"key-{uuid.uuid4().hex}"
    _create(backend.store, first, key)
    backend.store.complete(first, status=InvocationStatus.FAILED, output=None, error="x",
                           steps=[])
    second = _id()
    assert _create(backend.store, second, key) == (first, InvocationStatus.FAILED)
    assert backend.store.get(second) is None


def test_invocations_without_a_key_never_collide(backend: Backend) -> None:
    ids = [_id(), _id()]
    assert [_create(backend.store, i) for i in ids] == [(i, None) for i in ids]


def test_end_carries_every_step_the_tokens_and_the_first_start(backend: Backend) -> None:
    inv = _id()
    _create(backend.store, inv)
    steps = [_step(1, output={"reply": "hi"}, started_ms=1_700_000_001_000, pt=30, ct=7,
                   fallback=True),
             _step(0, output=[1, "a"], started_ms=1_700_000_000_000, pt=5)]
    assert backend.store.complete(inv, status=InvocationStatus.SUCCEEDED,
                                  output={"reply": "hi"}, error=None, steps=steps)
    ended = backend.store.get(inv)
    assert ended is not None and ended.status is InvocationStatus.SUCCEEDED
    assert ended.output == {"reply": "hi"} and ended.error is None
    assert (ended.tokens.prompt, ended.tokens.completion) == (35, 7)
    assert ended.started_at is not None
    assert ended.started_at.timestamp() == pytest.approx(1_700_000_000.0)
    assert ended.finished_at is not None
    assert [(s.index, s.name, s.status, s.attempts, s.output, s.fallback) for s in ended.steps] \
        == [(0, "s0", StepStatus.DONE, 1, [1, "a"], False),
            (1, "s1", StepStatus.DONE, 2, {"reply": "hi"}, True)]
    assert ended.steps[1].duration == pytest.approx(0.25)
    assert ended.steps[1].tokens.total == 37


def test_second_end_changes_nothing_but_adds_steps_not_yet_kept(backend: Backend) -> None:
    inv = _id()
    _create(backend.store, inv)
    backend.store.complete(inv, status=InvocationStatus.FAILED, output=None, error="first",
                           steps=[_step(0, status="failed", started_ms=1_000)])
    again = backend.store.complete(
        inv, status=InvocationStatus.SUCCEEDED, output={"late": True}, error=None,
        steps=[_step(0, started_ms=5_000), _step(1, started_ms=6_000)])
    assert again is False
    ended = backend.store.get(inv)
    assert ended is not None
    assert (ended.status, ended.output, ended.error) == (InvocationStatus.FAILED, None, "first")
    assert [(s.index, s.status) for s in ended.steps] == [(0, StepStatus.FAILED),
                                                          (1, StepStatus.DONE)]


def test_running_mark_moves_only_queued_invocations(backend: Backend) -> None:
    queued, ended, missing = _id(), _id(), _id()
    _create(backend.store, queued)
    _create(backend.store, ended)
    backend.store.complete(ended, status=InvocationStatus.SUCCEEDED, output=1, error=None,
                           steps=[])
    backend.store.mark_running([queued, ended, missing])
    assert backend.store.status_of([queued, ended, missing]) == {
        queued: InvocationStatus.RUNNING, ended: InvocationStatus.SUCCEEDED}
    running = backend.store.get(queued)
    assert running is not None and running.started_at is not None
    assert backend.store.complete(queued, status=InvocationStatus.SUCCEEDED, output=2,
                                  error=None, steps=[])
    assert backend.store.finished_count([queued, ended, missing]) == 2


def test_unknown_and_deleted_invocations_are_absent(backend: Backend) -> None:
    inv, key = _id(), f"key-{uuid.uuid4().hex}"
    assert backend.store.status(inv) is None and backend.store.get(inv) is None
    _create(backend.store, inv, key)
    backend.store.delete(inv)
    assert backend.store.status(inv) is None
    retry = _id()
    assert _create(backend.store, retry, key) == (retry, None)  # the key is free again


def test_unfinished_invocations_are_listed_oldest_first_page_by_page(
    backend: Backend,
) -> None:
    ids = []
    for _ in range(3):
        ids.append(_id())
        _create(backend.store, ids[-1])
        backend.wait(0.02)
    backend.store.complete(ids[1], status=InvocationStatus.SUCCEEDED, output=None,
                           error=None, steps=[])
    assert [u.id for u in backend.store.unfinished_before(3600) if u.id in ids] == []
    backend.wait(0.2)
    mine = [u for u in backend.store.unfinished_before(0.1, limit=10_000) if u.id in ids]
    assert [u.id for u in mine] == [ids[0], ids[2]]
    assert mine[0].payload == {"ticket": "T-1"} and mine[0].workflow == "wf-contract"
    rest = backend.store.unfinished_before(0.1, after=mine[0], limit=10_000)
    assert [u.id for u in rest if u.id in ids] == [ids[2]]
