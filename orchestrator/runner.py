"""Running one step delivery: claim, skip if already done, execute, record.

This is the only place that decides what a step delivery does; the Celery tasks in
``tasks/`` only hand over their message. The message carries a context
``{"invocation_id", "workflow", "payload", "outputs"}`` and each step returns it with its
own output added, which Celery's chain passes to the next step.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from orchestrator import runtime
from orchestrator.errors import RetryLater, StepBusy, StepFailed, TransientStepError
from orchestrator.store.invocations import ClaimState
from orchestrator.workflow import LLMStep, PythonStep, Step, StepContext, ToolStep, registry

log = logging.getLogger(__name__)

Context = dict[str, Any]


@dataclass(frozen=True)
class StepOutcome:
    output: Any
    prompt_tokens: int = 0
    completion_tokens: int = 0
    fallback: bool = False


def backoff(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter: a delay in [base/2, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2**attempt))
    return random.uniform(base / 2, max(base / 2, ceiling))


def _execute(step: Step, ctx: StepContext, *, last_attempt: bool) -> StepOutcome:
    if isinstance(step, PythonStep):
        return StepOutcome(step.fn(ctx))
    if isinstance(step, LLMStep):
        from orchestrator.llm.gateway import complete

        result = complete(step.messages(ctx), max_tokens=step.max_tokens,
                          temperature=step.temperature)
        return StepOutcome(
            {"content": result.content, "model": result.model,
             "usage": {"prompt_tokens": result.prompt_tokens,
                       "completion_tokens": result.completion_tokens}},
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
        )
    if isinstance(step, ToolStep):
        from orchestrator.tools.invoke import invoke

        outcome = invoke(step.tool, step.input(ctx), last_attempt=last_attempt)
        return StepOutcome(outcome.output, fallback=outcome.fallback)
    raise StepFailed(f"unknown step type {type(step).__name__}")


def _with_output(context: Context, name: str, output: Any) -> Context:
    outputs = dict(context.get("outputs") or {})
    outputs[name] = output
    return {**context, "outputs": outputs}


def run_step(context: Context, index: int, *, retries: int) -> Context:
    """Run delivery ``retries`` of step ``index``; returns the context for the next step.

    Raises ``RetryLater`` when this delivery should run again (a transient error with
    retries left, or another delivery holding the claim), ``StepFailed`` when the
    invocation has failed (recorded before raising).
    """
    rt = runtime.current()
    rt.load_workflows()
    invocation_id = str(context["invocation_id"])
    workflow = registry.get(str(context["workflow"]))
    step = workflow.step_at(index)
    store = rt.store
    owner = runtime.owner_id()
    settings = rt.settings

    claim = store.claim_step(invocation_id=invocation_id, index=index, name=step.name,
                             kind=step.kind.value, owner=owner,
                             lease_seconds=settings.step_lease_seconds)
    if claim.state is ClaimState.BUSY and claim.owner and runtime.owner_is_dead(claim.owner):
        claim = store.claim_step(invocation_id=invocation_id, index=index, name=step.name,
                                 kind=step.kind.value, owner=owner,
                                 lease_seconds=settings.step_lease_seconds,
                                 steal_from=claim.owner)
    if claim.state is ClaimState.DONE:
        log.info("step %s of %s already done: skipped", step.name, invocation_id)
        return _with_output(context, step.name, claim.output)
    if claim.state is ClaimState.FAILED:
        raise StepFailed(f"invocation {invocation_id} has failed already")
    if claim.state is ClaimState.BUSY:
        wait = max(1.0, min(claim.retry_after + 0.5, settings.visibility_timeout / 2))
        raise RetryLater(str(StepBusy(f"step {step.name} is held by {claim.owner}", wait)), wait)

    last_attempt = retries >= settings.step_max_retries
    ctx = StepContext(
        invocation_id=invocation_id,
        workflow=workflow.name,
        step=step.name,
        payload=workflow.payload.model_validate(context["payload"]),
        outputs=dict(context.get("outputs") or {}),
    )
    started = time.monotonic()
    try:
        outcome = _execute(step, ctx, last_attempt=last_attempt)
    except TransientStepError as exc:
        message = f"step {step.name}: {exc}"
        if last_attempt:
            store.fail(invocation_id=invocation_id, index=index,
                       error=f"{message} (gave up after {retries + 1} attempts)")
            raise StepFailed(message) from exc
        store.release_step(invocation_id=invocation_id, index=index, owner=owner, error=message)
        delay = exc.retry_after if exc.retry_after is not None else backoff(retries)
        delay = min(delay, settings.visibility_timeout / 2)
        raise RetryLater(message, delay) from exc
    except Exception as exc:
        message = f"step {step.name}: {type(exc).__name__}: {exc}"
        store.fail(invocation_id=invocation_id, index=index, error=message)
        log.error("invocation %s failed: %s", invocation_id, message)
        raise StepFailed(message) from exc
    output = store.finish_step(
        invocation_id=invocation_id, index=index, owner=owner, output=outcome.output,
        prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens,
        fallback=outcome.fallback, last=index == len(workflow.steps) - 1,
    )
    log.debug("step %s of %s done in %.3fs", step.name, invocation_id,
              time.monotonic() - started)
    return _with_output(context, step.name, output)
