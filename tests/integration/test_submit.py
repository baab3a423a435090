"""Producer API against real Redis, PostgreSQL and worker processes."""

from __future__ import annotations

import threading

import pytest
import redis
from sqlalchemy import text

import orchestrator
from config import Settings
from orchestrator import runtime
from orchestrator.errors import InvalidPayload, PayloadTooLarge, UnknownWorkflow
from tests.procs import Fleet


def _row_count() -> int:
    with runtime.current().engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM invocations")).scalar_one())


def _queued_messages(settings: Settings) -> int:
    client = redis.Redis.from_url(settings.redis_url or "")
    return sum(int(client.llen(q)) for q in ("agents", "llm", "tools"))


def test_pipeline_round_trip_records_every_step(settings: Settings, fleet: Fleet) -> None:
    fleet.start("agents", concurrency=2)
    invocation_id = orchestrator.submit("pipeline-5", {"n": 10})
    invocation = orchestrator.wait(invocation_id, timeout=30)
    assert invocation.status is orchestrator.InvocationStatus.SUCCEEDED
    assert invocation.output == {"n": 15}
    assert [s.name for s in invocation.steps] == [f"step-{i}" for i in range(1, 6)]
    assert all(s.attempts == 1 and s.finished_at is not None for s in invocation.steps)
    assert invocation.finished_at is not None and invocation.latency is not None


def test_repeated_idempotency_key_returns_same_invocation(
    settings: Settings, fleet: Fleet
) -> None:
    before = _row_count()
    ids: list[str] = []

    def submit() -> None:
        ids.append(orchestrator.submit("pipeline-5", {"n": 1}, idempotency_key="order-77"))

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1
    assert _row_count() == before + 1
    assert _queued_messages(settings) == 1  # one chain started, not eight
    fleet.start("agents", concurrency=2)
    assert orchestrator.wait(ids[0], timeout=30).output == {"n": 6}
    assert orchestrator.submit("pipeline-5", {"n": 1}, idempotency_key="order-77") == ids[0]
    assert _queued_messages(settings) == 0


@pytest.mark.parametrize(
    ("workflow", "payload", "error", "fragment"),
    [
        ("no-such-flow", {"n": 1}, UnknownWorkflow, "no workflow named 'no-such-flow'"),
        ("pipeline-5", {"n": -3}, InvalidPayload, "n: Input should be greater than or equal"),
        ("pipeline-5", {"n": "ten"}, InvalidPayload, "n: Input should be a valid integer"),
        ("support-triage", {"customer_id": "c1"}, InvalidPayload, "ticket_id: Field required"),
        ("pipeline-5", {"n": float("nan")}, InvalidPayload, "not plain JSON"),
        ("pipeline-5", {"n": 1, "when": object()}, InvalidPayload, "not plain JSON"),
        ("pipeline-5", {1: "int key"}, InvalidPayload, "non-string key"),
        ("pipeline-5", ["n", 1], InvalidPayload, "must be a JSON object"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(
    settings: Settings, workflow: str, payload: object, error: type[Exception], fragment: str
) -> None:
    before = _row_count()
    with pytest.raises(error, match=None) as caught:
        orchestrator.submit(workflow, payload)  # type: ignore[arg-type]
    assert fragment in str(caught.value)
    assert _row_count() == before
    assert _queued_messages(settings) == 0


def test_payload_over_the_limit_is_refused(settings: Settings) -> None:
    before = _row_count()
    big = {"customer_id": "c", "ticket_id": "t", "message": "x" * (settings.max_payload_bytes)}
    with pytest.raises(PayloadTooLarge, match="over the limit of 262144"):
        orchestrator.submit("support-triage", big)
    assert _row_count() == before
    assert _queued_messages(settings) == 0


def test_failing_step_fails_the_invocation_with_its_error(
    settings: Settings, fleet: Fleet
) -> None:
    fleet.start("agents", concurrency=1)
    invocation = orchestrator.wait(
        orchestrator.submit("test-fail", {"reason": "kaput"}), timeout=30
    )
    assert invocation.status is orchestrator.InvocationStatus.FAILED
    assert invocation.error == "step explode: RuntimeError: kaput"
    assert invocation.steps[0].status.value == "failed"
