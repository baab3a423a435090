"""Running one step delivery: claim, skip if already done, execute, record.

This is the only place that decides what a step delivery does; the Celery tasks in
``tasks/`` only hand over their message. The message carries a context
``{"invocation_id", "workflow", "payload", "outputs"}`` and each step returns it with its
own output added, which Celery's chain passes to the next step.

The runner is built once per worker process from its collaborators (claims, the
invocation store, the step executor, claim identity, the workflow registry), so every
decision here runs as well against the in-memory fakes of :mod:`orchestrator.testing`.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

from config import Settings
from orchestrator.errors import RetryLater, StepBusy, StepFailed, TransientStepError
from orchestrator.execution.claims import Begin, BeginState, StepClaims
from orchestrator.execution.steps import Executor, StepOutcome
from orchestrator.invocation import InvocationStatus, StepStatus
from orchestrator.workflow import Registry, Step, StepContext, Workflow

log = logging.getLogger(__name__)

Context = dict[str, Any]


class InvocationEnds(Protocol):
    """What the runner needs of the invocation store."""

    def complete(self, invocation_id: str, *, status: InvocationStatus, output: Any,
                 error: str | None, steps: list[dict[str, Any]]) -> bool: ...

    def status(self, invocation_id: str) -> InvocationStatus | None: ...


class ClaimIdentity(Protocol):
    def owner(self) -> str: ...

    def is_dead(self, owner: str) -> bool: ...


@dataclass(frozen=True)
class RunnerPolicy:
    """The settings the runner decides with."""

    lease_seconds: float
    max_retries: int
    visibility_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RunnerPolicy:
        return cls(lease_seconds=settings.step_lease_seconds,
                   max_retries=settings.step_max_retries,
                   visibility_timeout=settings.visibility_timeout)


def backoff(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter: a delay in [base/2, min(cap, base * 2**attempt)]."""
    ceiling = min(cap, base * (2**attempt))
    return random.uniform(base / 2, max(base / 2, ceiling))


def with_output(context: Context, name: str, output: Any) -> Context:
    """``context`` with one more step output (the input of the next step)."""
    outputs = dict(context.get("outputs") or {})
    outputs[name] = output
    return {**context, "outputs": outputs}


def step_record(step: Step, *, status: StepStatus, attempts: int, started_ms: int,
                duration: float, outcome: StepOutcome | None,
                error: str | None) -> dict[str, Any]:
    """A step's record as kept in flight and then written to PostgreSQL."""
    return {
        "name": step.name,
        "kind": step.kind.value,
        "status": status.value,
        "attempts": attempts,
        "output": outcome.output if outcome else None,
        "error": error,
        "fallback": outcome.fallback if outcome else False,
        "pt": outcome.prompt_tokens if outcome else 0,
        "ct": outcome.completion_tokens if outcome else 0,
        "started_ms": started_ms,
        "finished_ms": started_ms + int(duration * 1000),
    }


class StepRunner:
    """Runs step deliveries for one worker process."""

    def __init__(self, *, claims: StepClaims, store: InvocationEnds, executor: Executor,
                 identity: ClaimIdentity, workflows: Registry, policy: RunnerPolicy) -> None:
        self.claims = claims
        self.store = store
        self.executor = executor
        self.identity = identity
        self.workflows = workflows
        self.policy = policy

    def run(self, context: Context, index: int, *, retries: int) -> Context:
        """Run delivery ``retries`` of step ``index``; returns the context for the next step.

        A step already recorded done is skipped (its recorded output is passed on); a step
        claimed by another live delivery is retried later. Raises ``RetryLater`` when this
        delivery should run again (a transient error with retries left, or the claim held
        elsewhere), ``StepFailed`` when the invocation has failed (recorded before raising).
        """
        invocation_id = str(context["invocation_id"])
        workflow = self.workflows.get(str(context["workflow"]))
        step = workflow.step_at(index)
        claims = self.claims
        owner = self.identity.owner()
        lease = self.policy.lease_seconds

        ends_run = index == len(workflow.steps) - 1
        begin = claims.begin(invocation_id, index, owner, lease, with_records=ends_run)
        if (begin.state is BeginState.BUSY and begin.holder
                and self.identity.is_dead(begin.holder)):
            begin = claims.begin(invocation_id, index, owner, lease, steal=begin.holder,
                                 with_records=ends_run)
        if begin.state is BeginState.DONE:
            assert begin.record is not None
            if begin.record["status"] != StepStatus.DONE.value:
                raise StepFailed(f"invocation {invocation_id} failed at step {step.name}")
            log.info("step %s of %s already done: skipped", step.name, invocation_id)
            return with_output(context, step.name, begin.record["output"])
        if begin.state is BeginState.BUSY:
            wait = max(1.0, min(begin.remaining + 0.5, self.policy.visibility_timeout / 2))
            raise RetryLater(str(StepBusy(f"step {step.name} is held by {begin.holder}", wait)),
                             wait)
        if begin.took_over:
            # An earlier delivery died holding this step; it may have ended the invocation
            # in PostgreSQL before it could say so here.
            finished = self.store.status(invocation_id)
            if finished is not None and finished.finished:
                claims.release(invocation_id, index, owner)
                if finished is InvocationStatus.FAILED:
                    raise StepFailed(f"invocation {invocation_id} has failed")
                return context
        try:
            return self._run_claimed(context, workflow, index, retries=retries, owner=owner,
                                     begin=begin)
        except RetryLater:
            claims.release(invocation_id, index, owner)
            raise

    def _finish(self, context: Context, workflow: Workflow, index: int,
                record: dict[str, Any], *, owner: str, begin: Begin) -> dict[str, Any]:
        """Record the step; after the last step or a failure, write the invocation's end to
        PostgreSQL first, so "done" in Redis never stands for an end PostgreSQL lacks."""
        invocation_id = str(context["invocation_id"])
        failed = record["status"] == StepStatus.FAILED.value
        if failed or index == len(workflow.steps) - 1:
            # Steps before this one were done before it began, so the records its begin
            # brought back are complete; only a failure elsewhere needs to read them now.
            if begin.records is not None:
                records = dict(begin.records)
            else:
                _, records, _ = self.claims.snapshot(invocation_id)
            records[index] = record
            steps = [{"idx": i, **r} for i, r in sorted(records.items())]
            self.store.complete(
                invocation_id,
                status=InvocationStatus.FAILED if failed else InvocationStatus.SUCCEEDED,
                output=None if failed else record["output"],
                error=record["error"],
                steps=steps,
            )
        return self.claims.finish(invocation_id, index, owner, record,
                                  queue=workflow.step_at(index).kind.queue)

    def _run_claimed(self, context: Context, workflow: Workflow, index: int, *, retries: int,
                     owner: str, begin: Begin) -> Context:
        invocation_id = str(context["invocation_id"])
        step = workflow.step_at(index)
        last_attempt = retries >= self.policy.max_retries
        ctx = StepContext(
            invocation_id=invocation_id,
            workflow=workflow.name,
            step=step.name,
            payload=workflow.payload.model_validate(context["payload"]),
            outputs=dict(context.get("outputs") or {}),
        )
        started = time.monotonic()

        def record(status: StepStatus, outcome: StepOutcome | None,
                   error: str | None) -> dict[str, Any]:
            return self._finish(context, workflow, index,
                                step_record(step, status=status, attempts=retries + 1,
                                            started_ms=begin.now_ms,
                                            duration=time.monotonic() - started,
                                            outcome=outcome, error=error),
                                owner=owner, begin=begin)

        try:
            outcome = self.executor.execute(step, ctx, last_attempt=last_attempt)
        except TransientStepError as exc:
            message = f"step {step.name}: {exc}"
            if not last_attempt:
                delay = exc.retry_after if exc.retry_after is not None else backoff(retries)
                raise RetryLater(message, min(delay, self.policy.visibility_timeout / 2)) from exc
            error = f"{message} (gave up after {retries + 1} attempts)"
            record(StepStatus.FAILED, None, error)
            raise StepFailed(error) from exc
        except Exception as exc:
            error = f"step {step.name}: {type(exc).__name__}: {exc}"
            record(StepStatus.FAILED, None, error)
            log.error("invocation %s failed: %s", invocation_id, error)
            raise StepFailed(error) from exc
        standing = record(StepStatus.DONE, outcome, None)
        return with_output(context, step.name, standing["output"])
