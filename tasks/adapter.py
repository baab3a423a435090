"""The one adapter between a Celery delivery and the orchestrator's step runner."""

from __future__ import annotations

from typing import Any

from celery import Task

from orchestrator import subsystems
from orchestrator.errors import RetryLater


def deliver(task: Task, context: dict[str, Any], index: int) -> dict[str, Any]:
    """Run one step delivery with this process's runner; a ``RetryLater`` becomes a Celery
    retry with its countdown.

    The runner bounds the number of retries itself, hence ``max_retries=None`` here.
    """
    try:
        return subsystems.current().runner.run(context, index,
                                               retries=int(task.request.retries or 0))
    except RetryLater as exc:
        raise task.retry(countdown=exc.countdown, max_retries=None) from exc
