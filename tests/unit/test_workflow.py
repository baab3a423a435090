"""Declaring workflows and tools: mistakes are refused at declaration."""

from __future__ import annotations

import pytest
from celery import Celery
from pydantic import BaseModel

from orchestrator.errors import (
    ToolDefinitionError,
    UnknownTool,
    UnknownWorkflow,
    WorkflowDefinitionError,
)
from orchestrator.execution.dispatch import build_chain
from orchestrator.tools.registry import Timeout, ToolRegistry
from orchestrator.workflow import Registry, StepKind, Workflow, registry


class Empty(BaseModel):
    pass


def test_steps_route_to_their_kind_queue() -> None:
    flow = Workflow("unit-routing", payload=Empty, register=False)
    flow.python("a", lambda ctx: {})
    flow.llm("b", messages=lambda ctx: [{"role": "user", "content": "hi"}])
    flow.tool("c", tool="echo", input=lambda ctx: {})
    assert [s.kind.queue for s in flow.steps] == ["agents", "llm", "tools"]
    assert flow.steps[1].kind is StepKind.LLM


def test_duplicate_step_and_bad_names_are_refused() -> None:
    flow = Workflow("unit-dupes", payload=Empty, register=False)
    flow.python("a", lambda ctx: {})
    with pytest.raises(WorkflowDefinitionError, match="exists already"):
        flow.python("a", lambda ctx: {})
    with pytest.raises(WorkflowDefinitionError, match="must be 1-64"):
        Workflow("Has Spaces", payload=Empty, register=False)
    with pytest.raises(WorkflowDefinitionError, match="pydantic BaseModel"):
        Workflow("unit-bad-model", payload=dict, register=False)  # type: ignore[arg-type]


def test_unknown_workflow_lists_the_known_ones() -> None:
    local = Registry()
    Workflow("unit-known", payload=Empty, register=False)
    local.add(Workflow("unit-known-2", payload=Empty, register=False))
    with pytest.raises(UnknownWorkflow, match="registered: unit-known-2"):
        local.get("nope")


def test_second_workflow_with_same_name_is_refused() -> None:
    Workflow("unit-once", payload=Empty)
    try:
        with pytest.raises(WorkflowDefinitionError, match="exists already"):
            Workflow("unit-once", payload=Empty)
    finally:
        registry.remove("unit-once")


def test_tool_without_fallback_or_timeout_is_refused() -> None:
    tools = ToolRegistry()
    with pytest.raises(ToolDefinitionError, match="has no fallback"):
        tools.declare("search", http=True, timeout=2.0)
    with pytest.raises(ToolDefinitionError, match="has no timeout"):
        tools.declare("search", http=True, fallback=None)
    with pytest.raises(ToolDefinitionError, match="positive seconds"):
        tools.declare("search", http=True, timeout=Timeout(read=0), fallback=None)
    with pytest.raises(UnknownTool, match="no tool named 'search'"):
        tools.get("search")


def test_tool_fallback_value_or_function() -> None:
    tools = ToolRegistry()
    fixed = tools.declare("a", fn=lambda p: p, timeout=1.0, fallback={"ok": False})
    computed = tools.declare("b", fn=lambda p: p, timeout=1.0,
                             fallback=lambda p: {"id": p["id"], "degraded": True})
    assert fixed.fallback({"x": 1}) == {"ok": False}
    assert computed.fallback({"id": 7}) == {"id": 7, "degraded": True}
    assert tools.declare("c", http=True, timeout=1.0, fallback=None).http_path == "/tools/c"


def test_chain_routes_each_step_and_shows_flower_a_short_label_not_the_payload() -> None:
    flow = Workflow("unit-chain", payload=Empty, register=False)
    flow.python("load", lambda ctx: {})
    flow.llm("classify", messages=lambda ctx: [{"role": "user", "content": "hi"}])
    context = {"invocation_id": "inv-1", "workflow": "unit-chain",
               "payload": {"message": "my card number is 4111"}, "outputs": {}}
    app = Celery("unit", set_as_current=False)
    signatures = build_chain(app, flow, context).tasks
    assert [s.options["queue"] for s in signatures] == ["agents", "llm"]
    assert signatures[0].args == (context, 0) and signatures[1].args == (1,)
    assert [s.options["argsrepr"] for s in signatures] == [
        "step 1/2 'load' of unit-chain inv-1", "step 2/2 'classify' of unit-chain inv-1"]
