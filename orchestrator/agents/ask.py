"""``llm-ask``: one LLM call, nothing else. A smoke test of the LLM path, and the unit of
load in ``scripts/bench_llm.py``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from orchestrator.workflow import StepContext, Workflow


class AskPayload(BaseModel):
    question: str = Field(min_length=1, max_length=20_000)
    max_tokens: int = Field(default=64, ge=1, le=4096)


def _messages(ctx: StepContext) -> list[dict[str, str]]:
    payload = ctx.payload
    assert isinstance(payload, AskPayload)
    return [{"role": "user", "content": payload.question}]


workflow = Workflow("llm-ask", payload=AskPayload)
workflow.llm("answer", messages=_messages, max_tokens=64)
