"""Turning an invocation into a Celery chain: one signature per step, on its kind's queue."""

from __future__ import annotations

from typing import Any

from celery import Celery, chain

from config.celery import STEP_TASKS
from orchestrator.workflow import Workflow


def build_chain(app: Celery, workflow: Workflow, context: dict[str, Any]) -> Any:
    """The chain for ``workflow``: step 0 gets the context, each later step its predecessor's
    return value (the context with one more output)."""
    signatures = []
    for index, step in enumerate(workflow.steps):
        queue = step.kind.queue
        args: tuple[Any, ...] = (context, index) if index == 0 else (index,)
        # What Flower and worker logs show for the message, instead of Celery rendering
        # the whole context (payload and every output so far) at each step.
        argsrepr = (f"step {index + 1}/{len(workflow.steps)} {step.name!r} of "
                    f"{workflow.name} {context['invocation_id']}")
        signatures.append(app.signature(STEP_TASKS[queue], args=args, queue=queue,
                                        argsrepr=argsrepr))
    return chain(*signatures)


def dispatch(app: Celery, workflow: Workflow, context: dict[str, Any]) -> None:
    """Publish the chain's first message (which carries the rest of the chain)."""
    build_chain(app, workflow, context).apply_async()
