"""Benchmark and test workloads (not reference agents): workers load them only where a
benchmark or a test lists ``tests.workloads`` in ``ORCH_WORKFLOW_MODULES``.

- ``pipeline-5``: five python steps and no I/O, to measure the orchestrator's own cost
  (``scripts/bench_overhead.py``).
- ``llm-ask``: one LLM call, nothing else: a smoke test of the LLM path and the unit of
  load in ``scripts/bench_llm.py``.
- ``order-status``: look an order up (tool ``lookup_order``) and summarise it: one tool
  call behind its breaker per invocation (``scripts/bench_breaker.py``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

import orchestrator.agents  # noqa: F401 - declares the tool ``lookup_order``
from orchestrator.workflow import StepContext, Workflow


class PipelinePayload(BaseModel):
    n: int = Field(default=0, ge=0)


def _increment(ctx: StepContext) -> dict[str, Any]:
    payload = ctx.payload
    assert isinstance(payload, PipelinePayload)
    previous = [v["n"] for v in ctx.outputs.values()]
    return {"n": (previous[-1] if previous else payload.n) + 1}


pipeline = Workflow("pipeline-5", payload=PipelinePayload)
for _i in range(5):
    pipeline.python(f"step-{_i + 1}", _increment)


class AskPayload(BaseModel):
    question: str = Field(min_length=1, max_length=20_000)
    max_tokens: int = Field(default=64, ge=1, le=4096)


def _messages(ctx: StepContext) -> list[dict[str, str]]:
    payload = ctx.payload
    assert isinstance(payload, AskPayload)
    return [{"role": "user", "content": payload.question}]


ask = Workflow("llm-ask", payload=AskPayload)
ask.llm("answer", messages=_messages, max_tokens=64)


class OrderPayload(BaseModel):
    customer_id: str = Field(min_length=1, max_length=128)


def _lookup_input(ctx: StepContext) -> dict[str, Any]:
    payload = ctx.payload
    assert isinstance(payload, OrderPayload)
    return {"customer_id": payload.customer_id}


def _summarise(ctx: StepContext) -> dict[str, Any]:
    order = ctx.outputs["lookup-order"]
    return {"status": order.get("status"), "degraded": bool(order.get("degraded", False))}


order_status = Workflow("order-status", payload=OrderPayload)
order_status.tool("lookup-order", tool="lookup_order", input=_lookup_input)
order_status.python("summarise", _summarise)
