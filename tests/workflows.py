"""Workflows used only by tests; workers import them through ORCH_WORKFLOW_MODULES."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import BaseModel, Field

from orchestrator import runtime
from orchestrator.breakers import BreakerPolicy
from orchestrator.errors import Backpressure
from orchestrator.tools.registry import Timeout, declare_tool
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


# A callable tool whose behaviour a test switches through Redis: "ok", "hang", "error".
TOOL_MODE_KEY = "test:tool-mode"


def _flaky_tool(payload: dict[str, Any]) -> dict[str, Any]:
    client = redis.Redis.from_url(runtime.current().redis_url)
    mode = (client.get(TOOL_MODE_KEY) or b"ok").decode()
    client.hincrby("test:tool-calls", mode, 1)
    if mode == "hang":
        time.sleep(5)
    if mode == "error":
        raise RuntimeError("tool backend exploded")
    return {"answer": payload["q"] * 2}


declare_tool(
    "test_flaky",
    fn=_flaky_tool,
    timeout=Timeout(connect=0.1, read=0.3),
    fallback=lambda payload: {"answer": None, "degraded": True},
    breaker=BreakerPolicy(window=10, min_calls=4, threshold=0.5, reset_timeout=2.0,
                          probe_timeout=2.0),
)


class ToolPayload(BaseModel):
    q: int


tooling = Workflow("test-tool", payload=ToolPayload)
tooling.tool("ask", tool="test_flaky", input=lambda ctx: {"q": ctx.payload.q})  # type: ignore[attr-defined]



# A step whose behaviour the payload chooses, for the progress-guarantee tests. Every
# run that returns is counted in Redis (``test:probe:<tag>``), so a test sees how often a
# side effect happened.
class ProbePayload(BaseModel):
    tag: str
    first: str = "ok"  # ok | datetime | nul | backpressure | suicide | sleep | broken
    last: str = "ok"
    times: int = Field(default=2, ge=0)  # backpressure: how many deliveries refuse
    seconds: float = Field(default=0.0, ge=0, le=30)  # sleep


def _probe(ctx: StepContext) -> dict[str, Any]:
    payload = ctx.payload
    assert isinstance(payload, ProbePayload)
    mode = payload.first if ctx.step == "first" else payload.last
    client = redis.Redis.from_url(runtime.current().redis_url)
    field = f"{ctx.invocation_id}:{ctx.step}"
    if mode == "suicide":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "backpressure":
        seen = client.hincrby(f"test:probe-tries:{payload.tag}", field, 1)
        if seen <= payload.times:
            raise Backpressure("state layer full (test)", retry_after=0.2)
    if mode == "sleep":
        time.sleep(payload.seconds)
    if mode == "broken" and not client.exists(f"test:fixed:{payload.tag}"):
        raise RuntimeError("step broken until its fix is deployed")
    client.hincrby(f"test:probe:{payload.tag}", field, 1)
    if mode == "datetime":
        return {"at": datetime.now(UTC)}
    if mode == "nul":
        return {"text": "before\x00after"}
    return {"step": ctx.step}


probe = Workflow("test-probe", payload=ProbePayload)
probe.python("first", _probe)
probe.python("last", _probe)


def _always_broken(payload: dict[str, Any]) -> dict[str, Any]:
    redis.Redis.from_url(runtime.current().redis_url).hincrby("test:broken-calls",
                                                              str(payload["q"]), 1)
    raise RuntimeError("tool backend answered 502")


# Its breaker never opens (100 calls needed), so only the runner's retries stand
# between a failing tool and its fallback.
declare_tool(
    "test_broken",
    fn=_always_broken,
    timeout=Timeout(connect=0.1, read=1.0),
    fallback=lambda payload: {"answer": None, "degraded": True},
    breaker=BreakerPolicy(window=100, min_calls=100, threshold=1.0),
)

broken_tool = Workflow("test-broken-tool", payload=ToolPayload)
broken_tool.tool("ask", tool="test_broken", input=lambda ctx: {"q": ctx.payload.q})  # type: ignore[attr-defined]


# Tool isolation: a tool that hangs far past its timeout (its threads stay taken) beside
# a healthy one, both callables in the same worker. Started calls are counted in Redis.
HANG_SECONDS = 60.0


def _hanging_tool(payload: dict[str, Any]) -> dict[str, Any]:
    redis.Redis.from_url(runtime.current().redis_url).incr("test:hang-started")
    time.sleep(HANG_SECONDS)
    return {"answer": payload["q"]}


# Its breaker needs 100 calls before it may open, so 100 calls reach the tool's threads
# (on a shared pool they would eat 100 threads); four threads of its own.
declare_tool(
    "test_hang",
    fn=_hanging_tool,
    timeout=Timeout(connect=0.1, read=0.3),
    fallback={"answer": None, "degraded": True},
    breaker=BreakerPolicy(window=100, min_calls=100, threshold=0.5, reset_timeout=30.0),
    threads=4,
)


def _healthy_tool(payload: dict[str, Any]) -> dict[str, Any]:
    return {"answer": payload["q"] * 2}


declare_tool(
    "test_healthy",
    fn=_healthy_tool,
    timeout=Timeout(connect=0.1, read=1.0),
    fallback={"answer": None, "degraded": True},
    breaker=BreakerPolicy(window=10, min_calls=4, threshold=0.5, reset_timeout=30.0),
)

hanging_tool = Workflow("test-hang-tool", payload=ToolPayload)
hanging_tool.tool("ask", tool="test_hang", input=lambda ctx: {"q": ctx.payload.q})  # type: ignore[attr-defined]
healthy_tool = Workflow("test-healthy-tool", payload=ToolPayload)
healthy_tool.tool("ask", tool="test_healthy", input=lambda ctx: {"q": ctx.payload.q})  # type: ignore[attr-defined]
