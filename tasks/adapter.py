"""The one adapter between a Celery delivery and the orchestrator's step runner."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, signals
from celery.exceptions import Reject

from config.celery import STEP_TASKS
from orchestrator import logs, subsystems
from orchestrator.errors import InvocationCancelled, RetryLater, StepFailed
from orchestrator.execution.claims import Handoff
from orchestrator.execution.dispatch import next_message
from orchestrator.execution.runner import Delivery, backoff, handed_off, recorded
from tasks.result import StepResult, summarize

log = logging.getLogger(__name__)

# An error escaping the runner itself (a bug, not a step's failure) is retried this many
# times before the message is let go; the reconciler then finds the invocation stalled.
MAX_UNEXPECTED = 20


def deliver(task: Task, context: dict[str, Any], index: int,
            kwargs: dict[str, Any]) -> StepResult:
    """Run one step delivery with this process's runner; a ``RetryLater`` becomes a Celery
    retry with its countdown and the runner's count of attempts in the message.

    Returns the context for the next step as a :class:`~tasks.result.StepResult`: Celery
    shows its summary (step, status, duration, tokens), never the context.
    The tasks declare unlimited Celery retries (``max_retries=None`` on the decorator):
    the runner alone bounds them.
    """
    delivery = Delivery.from_kwargs(kwargs)
    started = time.monotonic()
    recorded.set(None)
    handed_off.set(False)
    request = task.request

    def handoff(passed: dict[str, Any]) -> Handoff | None:
        return next_message(task.app, request, passed)

    try:
        passed_on = subsystems.current().runner.run(
            context, index, delivery, handoff=handoff if request.chain else None)
    except RetryLater as exc:
        raise _retry(task, kwargs, exc.countdown, attempts=exc.attempts,
                     held_since_ms=exc.held_since_ms) from exc
    except (StepFailed, InvocationCancelled):
        raise  # acked: the chain stops here
    except Exception as exc:
        unexpected = int(kwargs.get("unexpected") or 0) + 1
        if unexpected > MAX_UNEXPECTED:
            raise
        log.exception("step %d of %s: unexpected error, delivery retried", index,
                      context.get("invocation_id"))
        raise _retry(task, {**kwargs, "unexpected": unexpected}, backoff(unexpected),
                     attempts=delivery.attempts,
                     held_since_ms=delivery.held_since_ms) from exc
    if handed_off.get():
        # The next step's message went to the broker with this step's record: Celery
        # must not publish it again (it would only be a duplicate delivery).
        request.chain = None
    label = task.request.argsrepr or (f"step {index + 1} of {context.get('workflow')} "
                                      f"{context.get('invocation_id')}")
    return StepResult(passed_on, summarize(label, recorded.get(),
                                           time.monotonic() - started))


# Every log line of a step delivery names it (orchestrator.logs): set from Celery's
# prerun to its postrun, so Celery's own lines of the task (succeeded, retry, raised)
# carry the names too. Each pool thread has its own context.
_STEP_TASK_NAMES = frozenset(STEP_TASKS.values())


@signals.task_prerun.connect
def _name_the_step(task: Task, args: tuple[Any, ...] = (), **_: Any) -> None:
    if task.name not in _STEP_TASK_NAMES or len(args) < 2 or not isinstance(args[0], dict):
        return
    context, index = args[0], args[1]
    workflow = context.get("workflow")
    try:
        step = subsystems.current().runner.workflows.get(str(workflow)).step_at(index).name
    except Exception:  # an unknown workflow: the runner reports it, in a line of its own
        step = f"#{index}"
    logs.enter_step(logs.StepLogContext(
        invocation_id=context.get("invocation_id"), workflow=workflow, step=step,
        queue=(task.request.delivery_info or {}).get("routing_key"),
        task_id=task.request.id))


@signals.task_postrun.connect
def _step_done(**_: Any) -> None:
    logs.leave_step()


def _retry(task: Task, kwargs: dict[str, Any], countdown: float, *, attempts: int,
           held_since_ms: int | None) -> BaseException:
    carried = {**kwargs, "attempts": attempts}
    if held_since_ms is None:
        carried.pop("held_since_ms", None)
    else:
        carried["held_since_ms"] = held_since_ms
    try:
        # Celery re-sends a retry without the original argsrepr unless it is passed again.
        return task.retry(countdown=countdown, kwargs=carried,
                          argsrepr=task.request.argsrepr)
    except Reject as exc:
        # Celery turns a retry it could not publish (the broker away: a Redis restart)
        # into a reject *without* requeue, which drops the message. Give it back instead:
        # requeued now, or, with the broker still away, left unacked in Redis until the
        # visibility timeout brings it back.
        raise Reject(exc.reason, requeue=True) from exc
