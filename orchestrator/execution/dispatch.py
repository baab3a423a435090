"""Turning an invocation into a Celery chain: one signature per step, on its kind's queue;
and the chain's next message, built here for the step runner to push with its record.

A step's successor is normally published by Celery once the step's task returns: a
Redis client, a retry wrapper and a round trip of its own, after the step's record was
written in another. :func:`next_message` has Celery build that very message (same
task id, chain, parent and root ids, argsrepr), but kombu's Redis channel hands the
final ``LPUSH`` to a collector instead of the server (kombu's publish-batch hook), so
the runner's ``finish`` script pushes it in the round trip that writes the record.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, chain, signature

from config.celery import STEP_TASKS
from orchestrator.execution.claims import Handoff
from orchestrator.workflow import Workflow

log = logging.getLogger(__name__)


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


class _Collector:
    """Stands in for kombu's Redis publish batch: keeps the broker commands of the one
    message published through it instead of sending them."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple[Any, ...]]] = []

    def publish(self, channel: Any, message: dict[str, Any], **kwargs: Any) -> Any:
        return channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add(self, name: str, *args: Any) -> None:
        self.commands.append((name, args))


def next_message(app: Celery, request: Any, context: dict[str, Any]) -> Handoff | None:
    """The message Celery would publish for the next step of ``request``'s chain, given
    ``context`` (the step's return value), as a ``Handoff``; None when the chain has no
    next step or the broker would need more than one ``LPUSH`` for it (then Celery
    publishes it after the task, as usual)."""
    remaining = request.chain
    if not remaining:
        return None
    successor = signature(remaining[-1], app=app)
    parent = request.id
    priority = None
    if app.conf.task_inherit_parent_priority:
        priority = (request.delivery_info or {}).get("priority")
    collector = _Collector()
    try:
        with app.producer_or_acquire() as producer:
            local = getattr(producer, "_batch_local", None)
            if local is None or getattr(local, "current", None) is not None:
                return None
            local.current = collector
            try:
                successor.apply_async((context,), chain=remaining[:-1], parent_id=parent,
                                      root_id=request.root_id or parent, priority=priority,
                                      producer=producer)
            finally:
                del local.current
    except Exception as exc:  # the message goes the usual way: Celery publishes it
        log.debug("next step's message not built here (%s); Celery publishes it", exc)
        return None
    if len(collector.commands) != 1 or collector.commands[0][0] != "lpush":
        return None
    key, message = collector.commands[0][1]
    return Handoff(key=str(key), message=str(message))
