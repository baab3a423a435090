"""Workflows used only by tests; workers import them through ORCH_WORKFLOW_MODULES."""

from __future__ import annotations

import time
from typing import Any

import redis
from pydantic import BaseModel, Field

from orchestrator import runtime
from orchestrator.workflow import StepContext, Workflow


class SlowPayload(BaseModel):
    tag: str
    seconds: float = Field(default=1.0, ge=0, le=30)


def _counted_sleep(ctx: StepContext) -> dict[str, Any]:
    """Sleep, then count one completed execution of this step in Redis."""
    payload = ctx.payload
    assert isinstance(payload, SlowPayload)
    time.sleep(payload.seconds)
    client = redis.Redis.from_url(runtime.current().redis_url)
    client.hincrby(f"test:runs:{payload.tag}", f"{ctx.invocation_id}:{ctx.step}", 1)
    return {"step": ctx.step}


slow = Workflow("test-slow", payload=SlowPayload)
for _i in range(3):
    slow.python(f"sleep-{_i + 1}", _counted_sleep)


class FailPayload(BaseModel):
    reason: str = "boom"


def _explode(ctx: StepContext) -> dict[str, Any]:
    payload = ctx.payload
    assert isinstance(payload, FailPayload)
    raise RuntimeError(payload.reason)


failing = Workflow("test-fail", payload=FailPayload)
failing.python("explode", _explode)
