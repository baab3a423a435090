"""Turning an invocation into a Celery chain: one signature per step, on its kind's queue."""

from __future__ import annotations

from typing import Any

from celery import Celery, chain

from config.celery import STEP_TASKS
from orchestrator.workflow import Workflow


def build_chain(app: Celery, workflow: Workflow, context: dict[str, Any], *,
                start: int = 0) -> Any:
    """The chain for ``workflow`` from step ``start``: that step gets the context, each
    later step its predecessor's return value (the context with one more output)."""
    signatures = []
    for index, step in enumerate(workflow.steps):
        if index < start:
            continue
        queue = step.kind.queue
        args: tuple[Any, ...] = (context, index) if index == start else (index,)
        # What Flower and worker logs show for the message, instead of Celery rendering
        # the whole context (payload and every output so far) at each step.
        argsrepr = (f"step {index + 1}/{len(workflow.steps)} {step.name!r} of "
                    f"{workflow.name} {context['invocation_id']}")
        signatures.append(app.signature(STEP_TASKS[queue], args=args, queue=queue,
                                        argsrepr=argsrepr))
    return chain(*signatures)


def dispatch(app: Celery, workflow: Workflow, context: dict[str, Any], *,
             start: int = 0) -> None:
    """Publish the chain's first message (which carries the rest of the chain); ``start``:
    the step to begin at (``context["outputs"]`` then holds the earlier steps' outputs)."""
    build_chain(app, workflow, context, start=start).apply_async()
