"""Production orchestration for LLM-agent workflows on Celery.

Producer API::

    import orchestrator
    invocation_id = orchestrator.submit("support-triage", {...}, idempotency_key="t-1")
    invocation = orchestrator.wait(invocation_id, timeout=30)

Importing this package does no I/O; connections open on first use.
"""

from orchestrator import errors
from orchestrator.client import cancel, get, invocations, replay, submit, wait
from orchestrator.invocation import Invocation, InvocationStatus, StepRecord, TokenUsage
from orchestrator.runtime import configure
from orchestrator.tools.registry import Timeout, declare_tool
from orchestrator.workflow import StepContext, StepKind, Workflow, registry

__all__ = [
    "Invocation",
    "InvocationStatus",
    "StepContext",
    "StepKind",
    "StepRecord",
    "Timeout",
    "TokenUsage",
    "Workflow",
    "cancel",
    "configure",
    "declare_tool",
    "errors",
    "get",
    "invocations",
    "registry",
    "replay",
    "submit",
    "wait",
]
