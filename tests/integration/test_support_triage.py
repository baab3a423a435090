"""The reference agent end to end: real workers on three queues, simulators over HTTP."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import orchestrator
from config import Settings
from orchestrator import runtime, state, subsystems
from orchestrator.devstack.processes import FlusherProcess
from orchestrator.invocation import InvocationStatus
from orchestrator.state.durable import DurableState
from orchestrator.state.flusher import wait_until_clean
from tests.procs import Fleet


@pytest.mark.timeout(120)
def test_support_triage_round_trip(
    settings: Settings, simulators: tuple[str, str], fleet: Fleet
) -> None:
    fleet.start_all_profiles()
    customer = f"c-{uuid.uuid4().hex[:8]}"
    invocation = orchestrator.wait(orchestrator.submit(
        "support-triage",
        {"customer_id": customer, "ticket_id": "T-1", "message": "My parcel never arrived."},
    ), timeout=60)
    assert invocation.status is InvocationStatus.SUCCEEDED, invocation.error
    assert [s.name for s in invocation.steps] == [
        "load-customer", "classify", "lookup-order", "draft-reply", "record-ticket"]
    assert [s.kind for s in invocation.steps] == ["python", "llm", "tool", "llm", "python"]
    output = invocation.output
    assert output["category"] in ("billing", "shipping", "technical", "account", "other")
    assert output["reply"] and output["tickets_handled"] == 1
    assert not output["order_degraded"]
    llm_steps = [s for s in invocation.steps if s.kind == "llm"]
    assert invocation.tokens.total == sum(s.tokens.total for s in llm_steps) > 0
    assert all(s.tokens.prompt > 0 and s.tokens.completion > 0 for s in llm_steps)
    stats = httpx.get(simulators[0].removesuffix("/v1") + "/stats").json()["totals"]
    assert stats["succeeded"] >= 2


@pytest.mark.timeout(240)
def test_concurrent_invocations_for_one_customer_lose_no_ticket(
    settings: Settings, simulators: tuple[str, str], fleet: Fleet, tmp_path: Path
) -> None:
    fleet.start_all_profiles()
    flusher = FlusherProcess(settings.environment(), log_dir=tmp_path).start()
    customer = f"c-{uuid.uuid4().hex[:8]}"
    tickets = [f"T-{i}" for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda t: orchestrator.submit(
            "support-triage",
            {"customer_id": customer, "ticket_id": t, "message": "Where is my order?"}),
            tickets))
    finished = [orchestrator.wait(i, timeout=180) for i in ids]
    assert all(f.status is InvocationStatus.SUCCEEDED for f in finished)
    record = state.get(f"customer:{customer}")
    assert record is not None
    assert record.value["tickets_handled"] == len(tickets)
    assert sorted(record.value["ticket_ids"]) == sorted(tickets)
    try:
        assert wait_until_clean(runtime.current().state_shards, timeout=30)
    finally:
        flusher.stop()
    persisted = DurableState(subsystems.current().state_rows).get(f"customer:{customer}")
    assert persisted is not None and persisted.value == record.value
