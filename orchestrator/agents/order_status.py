"""``order-status``: look an order up (tool ``lookup_order``) and summarise it. The load
of ``scripts/bench_breaker.py``: one tool call, behind its breaker, per invocation."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from orchestrator.workflow import StepContext, Workflow


class OrderPayload(BaseModel):
    customer_id: str = Field(min_length=1, max_length=128)


def _lookup_input(ctx: StepContext) -> dict[str, Any]:
    payload = ctx.payload
    assert isinstance(payload, OrderPayload)
    return {"customer_id": payload.customer_id}


def _summarise(ctx: StepContext) -> dict[str, Any]:
    order = ctx.outputs["lookup-order"]
    return {"status": order.get("status"), "degraded": bool(order.get("degraded", False))}


workflow = Workflow("order-status", payload=OrderPayload)
workflow.tool("lookup-order", tool="lookup_order", input=_lookup_input)
workflow.python("summarise", _summarise)
