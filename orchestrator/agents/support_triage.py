"""``support-triage``: the reference agent of DESIGN.md.

load the customer's state -> LLM classifies -> tool ``lookup_order`` -> LLM drafts a
reply -> record the ticket in the customer's state through ``state.update``.
K concurrent invocations for one customer leave ``tickets_handled == K``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator import state
from orchestrator.breakers import BreakerPolicy
from orchestrator.tools.registry import Timeout, declare_tool
from orchestrator.workflow import StepContext, Workflow

LABELS = ("billing", "shipping", "technical", "account", "other")


class TriagePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(min_length=1, max_length=128)
    ticket_id: str = Field(min_length=1, max_length=128)
    message: str = Field(min_length=1, max_length=20_000)


def customer_key(customer_id: str) -> str:
    return f"customer:{customer_id}"


declare_tool(
    "lookup_order",
    http=True,
    # The order service answers in ~50 ms; a second is twenty times that. A longer
    # timeout only makes every hang (and every call during an outage) cost more.
    timeout=Timeout(connect=0.5, read=1.0),
    # Open after 5 failures in the last 20 calls (at least 5 seen): an outage costs the
    # fleet five timeouts, not one per call.
    breaker=BreakerPolicy(window=20, min_calls=5, threshold=0.5, reset_timeout=10.0,
                          probe_timeout=3.0),
    fallback=lambda payload: {
        "customer_id": payload.get("customer_id"),
        "status": "unknown",
        "degraded": True,
    },
)

workflow = Workflow("support-triage", payload=TriagePayload)


@workflow.step
def load_customer(ctx: StepContext) -> dict[str, Any]:
    payload = ctx.payload
    assert isinstance(payload, TriagePayload)
    record = state.get(customer_key(payload.customer_id))
    value = record.value if record else {}
    return {
        "tickets_handled": int(value.get("tickets_handled", 0)),
        "version": record.version if record else 0,
    }


def _classify_messages(ctx: StepContext) -> list[dict[str, str]]:
    payload = ctx.payload
    assert isinstance(payload, TriagePayload)
    return [
        {"role": "system", "content": "Classify the support message into exactly one label: "
         + ", ".join(LABELS) + ". Answer with the label only."},
        {"role": "user", "content": payload.message},
    ]


def _lookup_input(ctx: StepContext) -> dict[str, Any]:
    payload = ctx.payload
    assert isinstance(payload, TriagePayload)
    return {"customer_id": payload.customer_id, "ticket_id": payload.ticket_id}


def _draft_messages(ctx: StepContext) -> list[dict[str, str]]:
    payload = ctx.payload
    assert isinstance(payload, TriagePayload)
    label = ctx.outputs["classify"]["content"]
    order = ctx.outputs["lookup-order"]
    return [
        {"role": "system", "content": "You are a support agent. Draft a short, polite reply."},
        {"role": "user", "content": f"Category: {label}\nOrder: {order}\n"
         f"Customer message: {payload.message}"},
    ]


workflow.llm("classify", messages=_classify_messages, max_tokens=16)
workflow.tool("lookup-order", tool="lookup_order", input=_lookup_input)
workflow.llm("draft-reply", messages=_draft_messages, max_tokens=200)


@workflow.step
def record_ticket(ctx: StepContext) -> dict[str, Any]:
    payload = ctx.payload
    assert isinstance(payload, TriagePayload)

    def add_ticket(value: dict[str, Any]) -> dict[str, Any]:
        ids = list(value.get("ticket_ids", []))
        if payload.ticket_id in ids:
            # A redelivered step must not count the ticket twice.
            return value
        return {**value, "tickets_handled": int(value.get("tickets_handled", 0)) + 1,
                "ticket_ids": [*ids, payload.ticket_id]}

    record = state.update(customer_key(payload.customer_id), add_ticket)
    return {
        "category": ctx.outputs["classify"]["content"],
        "reply": ctx.outputs["draft-reply"]["content"],
        "order_degraded": bool(ctx.outputs["lookup-order"].get("degraded", False)),
        "tickets_handled": record.value["tickets_handled"],
        "state_version": record.version,
    }
