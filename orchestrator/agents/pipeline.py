"""``pipeline-5``: five python steps and no I/O, to measure the orchestrator's own cost."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from orchestrator.workflow import StepContext, Workflow


class PipelinePayload(BaseModel):
    n: int = Field(default=0, ge=0)


workflow = Workflow("pipeline-5", payload=PipelinePayload)


def _increment(ctx: StepContext) -> dict[str, Any]:
    payload = ctx.payload
    assert isinstance(payload, PipelinePayload)
    previous = [v["n"] for v in ctx.outputs.values()]
    return {"n": (previous[-1] if previous else payload.n) + 1}


for _i in range(5):
    workflow.python(f"step-{_i + 1}", _increment)
