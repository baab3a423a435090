"""The in-memory stores of orchestrator.testing keep the rules users' tests rely on.

(The step claims' rules are also checked against Redis, in
tests/integration/test_claims_contract.py.)
"""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.constants import INFLIGHT_MIN_TTL_SECONDS
from orchestrator.errors import UnknownInvocation
from orchestrator.execution.claims import BeginState
from orchestrator.invocation import InvocationStatus, StepStatus
from orchestrator.testing import ManualClock, MemoryInvocationStore, MemoryStepClaims


def _step(index: int, *, started_ms: int, pt: int = 0, ct: int = 0,
          output: Any = None) -> dict[str, Any]:
    return {"idx": index, "name": f"s{index}", "kind": "python", "status": "done",
            "attempts": 1, "output": output, "error": None, "fallback": False, "pt": pt,
            "ct": ct, "started_ms": started_ms, "finished_ms": started_ms + 5}


def _create(store: MemoryInvocationStore, key: str | None = None,
            invocation_id: str = "inv-1") -> tuple[str, InvocationStatus | None]:
    return store.create(invocation_id=invocation_id, workflow="wf", payload_json='{"a":1}',
                        step_count=2, idempotency_key=key)


def test_repeated_idempotency_key_returns_the_first_invocation() -> None:
    store = MemoryInvocationStore(ManualClock())
    assert _create(store, "order-7") == ("inv-1", None)
    assert _create(store, "order-7", invocation_id="inv-2") == ("inv-1", InvocationStatus.QUEUED)
    assert store.get("inv-2") is None
    assert store.counts() == {"queued": 1}


def test_end_is_written_once_and_a_second_end_changes_nothing() -> None:
    store = MemoryInvocationStore(ManualClock())
    _create(store)
    steps = [_step(0, started_ms=1_000, pt=10, ct=3), _step(1, started_ms=2_000, pt=5, ct=1,
                                                             output={"answer": 42})]
    assert store.complete("inv-1", status=InvocationStatus.SUCCEEDED, output={"answer": 42},
                          error=None, steps=steps)
    assert not store.complete("inv-1", status=InvocationStatus.FAILED, output=None,
                              error="late", steps=[])
    ended = store.get("inv-1")
    assert ended is not None
    assert (ended.status, ended.output, ended.error) == (
        InvocationStatus.SUCCEEDED, {"answer": 42}, None)
    assert (ended.tokens.prompt, ended.tokens.completion) == (15, 4)
    assert ended.started_at is not None and ended.started_at.timestamp() == 1.0
    assert [(s.index, s.status) for s in ended.steps] == [(0, StepStatus.DONE),
                                                          (1, StepStatus.DONE)]


def test_steps_of_an_unknown_invocation_are_refused() -> None:
    store = MemoryInvocationStore(ManualClock())
    with pytest.raises(UnknownInvocation):
        store.complete("nope", status=InvocationStatus.FAILED, output=None, error="x",
                       steps=[_step(0, started_ms=1)])


def test_running_mark_never_overwrites_an_end() -> None:
    store = MemoryInvocationStore(ManualClock())
    _create(store, invocation_id="a")
    _create(store, invocation_id="b")
    store.complete("b", status=InvocationStatus.FAILED, output=None, error="x", steps=[])
    store.mark_running(["a", "b", "missing"])
    assert store.status_of(["a", "b", "missing"]) == {"a": InvocationStatus.RUNNING,
                                                      "b": InvocationStatus.FAILED}


def test_in_flight_records_outlive_any_late_redelivery_then_expire() -> None:
    clock = ManualClock()
    claims = MemoryStepClaims(visibility_timeout=20, clock=clock)
    claims.begin("inv-1", 0, "w1", 8)
    claims.finish("inv-1", 0, "w1", {"output": 1}, queue="agents")
    clock.advance(INFLIGHT_MIN_TTL_SECONDS - 1)
    assert claims.begin("inv-1", 0, "w2", 8).state is BeginState.DONE
    clock.advance(1)
    assert claims.snapshot("inv-1") == (False, {}, set())


def test_each_new_result_counts_one_step_drained_from_its_queue() -> None:
    claims = MemoryStepClaims(clock=ManualClock())
    claims.finish("inv-1", 0, "w1", {"output": 1}, queue="llm")
    claims.finish("inv-1", 0, "w2", {"output": 2}, queue="llm")  # not a new result
    claims.finish("inv-1", 1, "w1", {"output": 3}, queue="tools")
    assert (claims.drained("llm"), claims.drained("tools"), claims.drained("agents")) == (1, 1, 0)
