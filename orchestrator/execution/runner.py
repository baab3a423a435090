"""Running one step delivery: claim, skip if already done, execute, record.

This is the only place that decides what a step delivery does; the Celery tasks in
``tasks/`` only hand over their message. The message carries a context
``{"invocation_id", "workflow", "payload", "outputs"}`` and each step returns it with its
own output added, which Celery's chain passes to the next step.

The progress guarantee, as this module keeps it:
- every delivery ends in a recorded outcome (done, failed) or in ``RetryLater`` (the
  message comes back); an infrastructure error while recording is retried here, then
  becomes ``RetryLater``, never an acknowledged message with a lost result;
- retries are counted here (``Delivery.attempts`` travels in the message), not by Celery:
  the last attempt reaches a tool's fallback or records the failure;
- a claim is renewed while its step runs (:mod:`orchestrator.execution.heartbeat`), so a
  redelivery never runs a step beside a live one; a step whose deliveries died
  ``max_deliveries`` times fails instead of being redelivered for ever;
- while no LLM provider can answer, an LLM step holds (retried later without spending
  attempts) for ``outage_hold`` seconds.

The runner is built once per worker process from its collaborators, so every decision
here runs as well against the in-memory fakes of :mod:`orchestrator.testing`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from config import Settings
from orchestrator.errors import (
    InvalidOutput,
    InvocationCancelled,
    OrchestratorError,
    ProviderOutage,
    RetryLater,
    StepFailed,
)
from orchestrator.execution.claims import Begin, BeginState, Handoff, StepClaims
from orchestrator.execution.classify import describe, is_transient, retry_after
from orchestrator.execution.heartbeat import Heartbeat
from orchestrator.execution.output import check_output
from orchestrator.execution.steps import Executor, StepOutcome
from orchestrator.execution.time_limit import (
    HARD_GRACE,
    StepTimeLimitExceeded,
    enforceable,
    soft_limit,
)
from orchestrator.invocation import InvocationStatus, StepStatus
from orchestrator.workflow import Registry, Step, StepContext, StepKind, Workflow

log = logging.getLogger(__name__)

Context = dict[str, Any]
T = TypeVar("T")

# The record of the step this thread's delivery ran to its end, for the task adapter's
# summary (Celery shows it instead of the context); None when the delivery recorded none.
recorded: ContextVar[dict[str, Any] | None] = ContextVar("orchestrator_step_recorded",
                                                         default=None)
# True once this thread's delivery knows the next step's message is in the broker already
# (pushed with the record by ``finish``): the task adapter then leaves Celery's chain be.
handed_off: ContextVar[bool] = ContextVar("orchestrator_step_handed_off", default=False)

# Builds the next step's broker message from the context it will carry (None: there is
# no next step, or it cannot be built here and Celery's chain publishes it as before).
NextMessage = Callable[[Context], Handoff | None]


class InvocationEnds(Protocol):
    """What the runner needs of the invocation store."""

    def complete(self, invocation_id: str, *, status: InvocationStatus, output: Any,
                 error: str | None, steps: list[dict[str, Any]]) -> bool: ...

    def status(self, invocation_id: str) -> InvocationStatus | None: ...

    def mark_running(self, invocation_ids: list[str]) -> None: ...


class ClaimIdentity(Protocol):
    def owner(self) -> str: ...

    def is_dead(self, owner: str) -> bool: ...


@dataclass(frozen=True)
class RunnerPolicy:
    """The settings the runner decides with."""

    lease_seconds: float
    max_retries: int
    visibility_timeout: float
    max_deliveries: int = 5
    outage_hold: float = 600.0
    step_time_limit: float = 600.0  # python steps: soft limit; hard HARD_GRACE later
    # How long an infrastructure error while recording is retried in place (the result
    # is in hand) before the delivery is retried instead.
    record_retry_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RunnerPolicy:
        return cls(lease_seconds=settings.step_lease_seconds,
                   max_retries=settings.step_max_retries,
                   visibility_timeout=settings.visibility_timeout,
                   max_deliveries=settings.step_max_deliveries,
                   outage_hold=settings.llm_outage_hold,
                   step_time_limit=settings.step_time_limit)


@dataclass(frozen=True)
class Delivery:
    """What a step's message says about earlier deliveries (Celery message kwargs)."""

    attempts: int = 0  # attempts that failed with a transient error
    held_since_ms: int | None = None  # Redis time the step began to hold for an outage

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> Delivery:
        held = kwargs.get("held_since_ms")
        return cls(attempts=int(kwargs.get("attempts") or 0),
                   held_since_ms=None if held is None else int(held))


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
                 identity: ClaimIdentity, workflows: Registry, policy: RunnerPolicy,
                 heartbeat: Heartbeat | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.claims = claims
        self.store = store
        self.executor = executor
        self.identity = identity
        self.workflows = workflows
        self.policy = policy
        self.heartbeat = heartbeat or Heartbeat(claims, store,
                                                lease_seconds=policy.lease_seconds)
        self.sleep = sleep

    def run(self, context: Context, index: int, delivery: Delivery | None = None, *,
            handoff: NextMessage | None = None) -> Context:
        """Run one delivery of step ``index``; returns the context for the next step.

        ``handoff`` builds the next step's message: a step that succeeds pushes it with
        its record (:attr:`handed_off` is then set, as it is when a skipped step's record
        says its delivery did so), so the chain never goes on without the record.

        A step already recorded done is skipped (its recorded output is passed on); a step
        claimed by another live delivery is retried later. Raises ``RetryLater`` when this
        delivery should run again (a transient error with attempts left, an outage, the
        claim held elsewhere, an infrastructure error), ``StepFailed`` when the invocation
        has failed (recorded before raising).
        """
        delivery = delivery or Delivery()
        invocation_id = str(context["invocation_id"])
        try:
            workflow = self.workflows.get(str(context["workflow"]))
            step = workflow.step_at(index)
        except OrchestratorError as exc:
            # This worker does not know the workflow (ORCH_WORKFLOW_MODULES differs from
            # the producer's): the invocation cannot run here.
            self._fail_unknown(invocation_id, str(exc), delivery)
            raise StepFailed(str(exc)) from exc
        owner = self.identity.owner()
        ends_run = index == len(workflow.steps) - 1
        try:
            begin = self._begin(invocation_id, index, owner, with_records=ends_run)
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise self._later(f"step {step.name}: cannot claim it ({describe(exc)})",
                              backoff(1), delivery) from exc
        if begin.state is BeginState.CANCELLED:
            log.info("step %s of %s not run: the invocation was cancelled (%s)", step.name,
                     invocation_id, begin.reason)
            raise InvocationCancelled(f"invocation {invocation_id} was cancelled: "
                                      f"{begin.reason}")
        if begin.state is BeginState.DONE:
            return self._skip_done(context, workflow, index, begin, delivery)
        if begin.state is BeginState.BUSY:
            wait = max(1.0, min(begin.remaining + 0.5, self.policy.visibility_timeout / 2))
            raise self._later(f"step {step.name} is held by {begin.holder}", wait, delivery)
        claim = (invocation_id, index, owner)
        limited = step.kind is StepKind.PYTHON and enforceable()
        self.heartbeat.hold(claim, deadline=time.monotonic() + self.policy.step_time_limit
                            + HARD_GRACE if limited else None)
        try:
            return self._run_held(context, workflow, index, delivery=delivery, owner=owner,
                                  begin=begin, handoff=handoff)
        except RetryLater:
            self._release(claim)
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._release(claim)
            raise self._later(f"step {step.name}: {describe(exc)}", backoff(2),
                              delivery) from exc
        finally:
            self.heartbeat.drop(claim)

    def _run_held(self, context: Context, workflow: Workflow, index: int, *,
                  delivery: Delivery, owner: str, begin: Begin,
                  handoff: NextMessage | None = None) -> Context:
        invocation_id = str(context["invocation_id"])
        step = workflow.step_at(index)
        if begin.took_over and self._ended_elsewhere(invocation_id, index, owner):
            return context
        if index == 0:
            self.heartbeat.started(invocation_id)
        if begin.deaths >= self.policy.max_deliveries:
            error = (f"worker died {begin.deaths} times running step {step.name} "
                     "(a crash, the OOM killer or a hard time limit)")
            self._record(context, workflow, index, begin, owner, StepStatus.FAILED, None,
                         error, attempts=delivery.attempts + 1, started=time.monotonic(),
                         delivery=delivery)
            log.error("invocation %s failed: %s", invocation_id, error)
            raise StepFailed(error)
        return self._run_claimed(context, workflow, index, delivery=delivery, owner=owner,
                                 begin=begin, handoff=handoff)

    def _fail_unknown(self, invocation_id: str, error: str, delivery: Delivery) -> None:
        try:
            self._retrying(lambda: self.store.complete(
                invocation_id, status=InvocationStatus.FAILED, output=None, error=error,
                steps=[]))
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise self._later(f"cannot record that {error} ({describe(exc)})", backoff(3),
                              delivery) from exc
        log.error("invocation %s failed: %s", invocation_id, error)

    def _begin(self, invocation_id: str, index: int, owner: str, *,
               with_records: bool) -> Begin:
        lease = self.policy.lease_seconds
        begin = self.claims.begin(invocation_id, index, owner, lease, with_records=with_records)
        if (begin.state is BeginState.BUSY and begin.holder
                and self.identity.is_dead(begin.holder)):
            begin = self.claims.begin(invocation_id, index, owner, lease, steal=begin.holder,
                                      with_records=with_records)
        return begin

    def _later(self, message: str, countdown: float, delivery: Delivery, *,
               charge: bool = False, held_since_ms: int | None = None) -> RetryLater:
        return RetryLater(message, min(countdown, self.policy.visibility_timeout / 2),
                          attempts=delivery.attempts + (1 if charge else 0),
                          held_since_ms=held_since_ms)

    def _release(self, claim: tuple[str, int, str]) -> None:
        try:
            self.claims.release(*claim)
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The claim lapses at the end of its lease instead (no heartbeat renews it).
            log.warning("step %d of %s: could not release its claim (%s)", claim[1],
                        claim[0], describe(exc))

    def _ended_elsewhere(self, invocation_id: str, index: int, owner: str) -> bool:
        """After taking over a claim left behind: has the invocation ended in PostgreSQL
        already (the earlier delivery died between writing the end and saying so)?"""
        finished = self._retrying(lambda: self.store.status(invocation_id))
        if finished is None or not finished.finished:
            return False
        self._release((invocation_id, index, owner))
        if finished is InvocationStatus.FAILED:
            raise StepFailed(f"invocation {invocation_id} has failed")
        return True

    def _skip_done(self, context: Context, workflow: Workflow, index: int, begin: Begin,
                   delivery: Delivery) -> Context:
        """The step is recorded done (or failed) in Redis: pass its output on. A failed
        step or the last one first makes sure PostgreSQL has the invocation's end: a
        delivery that recorded in Redis while PostgreSQL was down left that to us."""
        assert begin.record is not None
        invocation_id = str(context["invocation_id"])
        step = workflow.step_at(index)
        failed = begin.record["status"] != StepStatus.DONE.value
        if failed or index == len(workflow.steps) - 1:
            try:
                self._ensure_end(invocation_id, index, begin.record)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                raise self._later(f"step {step.name}: cannot write the invocation's end "
                                  f"({describe(exc)})", backoff(2), delivery) from exc
        if failed:
            raise StepFailed(f"invocation {invocation_id} failed at step {step.name}")
        if begin.record.get("handed_off"):
            handed_off.set(True)
        log.info("step %s of %s already done: skipped", step.name, invocation_id)
        return with_output(context, step.name, begin.record["output"])

    def _ensure_end(self, invocation_id: str, index: int, record: dict[str, Any]) -> None:
        status = self.store.status(invocation_id)
        if status is not None and status.finished:
            return
        _, records, _ = self.claims.snapshot(invocation_id)
        records[index] = record
        self._complete(invocation_id, records, record)

    def _complete(self, invocation_id: str, records: dict[int, dict[str, Any]],
                  ending: dict[str, Any]) -> None:
        failed = ending["status"] == StepStatus.FAILED.value
        self.store.complete(
            invocation_id,
            status=InvocationStatus.FAILED if failed else InvocationStatus.SUCCEEDED,
            output=None if failed else ending["output"],
            error=ending["error"],
            steps=[{"idx": i, **r} for i, r in sorted(records.items())],
        )

    def _retrying(self, fn: Callable[[], T]) -> T:
        """``fn()``, retried in place with backoff on infrastructure errors for up to
        ``record_retry_seconds``; the last error is raised after that."""
        deadline = time.monotonic() + self.policy.record_retry_seconds
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() >= deadline:
                    raise
                attempt += 1
                log.warning("recording a step result failed (%s); retrying", describe(exc))
                self.sleep(min(backoff(attempt, base=0.2, cap=5.0),
                               max(0.0, deadline - time.monotonic())))

    def _finish(self, context: Context, workflow: Workflow, index: int,
                record: dict[str, Any], *, owner: str, begin: Begin,
                handoff: Handoff | None = None) -> dict[str, Any]:
        """Record the step; after the last step or a failure, write the invocation's end to
        PostgreSQL first, so "done" in Redis stands for an end PostgreSQL has, except when
        PostgreSQL stays unreachable: then the record goes to Redis alone and the next
        delivery of this step (``_skip_done``) writes the end."""
        invocation_id = str(context["invocation_id"])
        failed = record["status"] == StepStatus.FAILED.value
        queue = workflow.step_at(index).kind.queue
        if failed or index == len(workflow.steps) - 1:
            # Steps before this one were done before it began, so the records its begin
            # brought back are complete; only a failure elsewhere needs to read them now.
            if begin.records is not None:
                records = dict(begin.records)
            else:
                _, records, _ = self._retrying(lambda: self.claims.snapshot(invocation_id))
            records[index] = record
            try:
                self._retrying(lambda: self._complete(invocation_id, records, record))
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._retrying(lambda: self.claims.finish(invocation_id, index, owner,
                                                          record, queue=queue))
                raise
        return self._retrying(lambda: self.claims.finish(invocation_id, index, owner, record,
                                                         queue=queue, handoff=handoff))

    def _record(self, context: Context, workflow: Workflow, index: int, begin: Begin,
                owner: str, status: StepStatus, outcome: StepOutcome | None,
                error: str | None, *, attempts: int, started: float,
                delivery: Delivery, handoff: Handoff | None = None) -> dict[str, Any]:
        """Record this delivery's outcome; an infrastructure error that outlasts the
        in-place retries becomes ``RetryLater`` (the outcome is then either in Redis, and
        the next delivery finishes the job, or nowhere, and the step runs again)."""
        step = workflow.step_at(index)
        record = step_record(step, status=status, attempts=attempts, started_ms=begin.now_ms,
                             duration=time.monotonic() - started, outcome=outcome,
                             error=error)
        if handoff is not None:
            record["handed_off"] = True
        try:
            return self._finish(context, workflow, index, record, owner=owner, begin=begin,
                                handoff=handoff)
        except Exception as exc:
            if not is_transient(exc):
                raise
            raise self._later(f"step {step.name}: recording its result failed "
                              f"({describe(exc)})", backoff(3), delivery) from exc

    def _run_claimed(self, context: Context, workflow: Workflow, index: int, *,
                     delivery: Delivery, owner: str, begin: Begin,
                     handoff: NextMessage | None = None) -> Context:
        invocation_id = str(context["invocation_id"])
        step = workflow.step_at(index)
        attempts = delivery.attempts
        last_attempt = attempts >= self.policy.max_retries
        started = time.monotonic()

        def record(status: StepStatus, outcome: StepOutcome | None, error: str | None,
                   message: Handoff | None = None) -> dict[str, Any]:
            return self._record(context, workflow, index, begin, owner, status, outcome,
                                error, attempts=attempts + 1, started=started,
                                delivery=delivery, handoff=message)

        try:
            ctx = StepContext(
                invocation_id=invocation_id,
                workflow=workflow.name,
                step=step.name,
                payload=workflow.payload.model_validate(context["payload"]),
                outputs=dict(context.get("outputs") or {}),
                cancelled=lambda: self.claims.is_cancelled(invocation_id),
            )
            if step.kind is StepKind.PYTHON:
                with soft_limit(self.policy.step_time_limit, step.name):
                    outcome = self.executor.execute(step, ctx, last_attempt=last_attempt)
            else:
                outcome = self.executor.execute(step, ctx, last_attempt=last_attempt)
            check_output(step.name, outcome.output)
        except InvocationCancelled:
            raise  # cancelled meanwhile: nothing to record, the chain stops
        except (InvalidOutput, StepTimeLimitExceeded) as exc:
            record(StepStatus.FAILED, None, str(exc))
            log.error("invocation %s failed: %s", invocation_id, exc)
            raise StepFailed(str(exc)) from exc
        except Exception as exc:
            if not is_transient(exc):
                error = f"step {step.name}: {type(exc).__name__}: {exc}"
                record(StepStatus.FAILED, None, error)
                log.error("invocation %s failed: %s", invocation_id, error)
                raise StepFailed(error) from exc
            message = f"step {step.name}: {describe(exc)}"
            if isinstance(exc, ProviderOutage):
                held_since = delivery.held_since_ms or begin.now_ms
                held = (begin.now_ms - held_since) / 1000
                if held < self.policy.outage_hold:
                    # Probe less often the longer the outage lasts.
                    wait = retry_after(exc) or backoff(1 + int(held // 10))
                    raise self._later(f"{message} (holding {held:.0f}s of "
                                      f"{self.policy.outage_hold:.0f}s)",
                                      min(wait, self.policy.outage_hold - held + 0.5),
                                      delivery, held_since_ms=held_since) from exc
                error = (f"{message} (no provider answered for {held:.0f}s; gave up after "
                         f"ORCH_LLM_OUTAGE_HOLD={self.policy.outage_hold:.0f}s)")
            elif not last_attempt:
                raise self._later(message, retry_after(exc) or backoff(attempts), delivery,
                                  charge=True) from exc
            else:
                error = f"{message} (gave up after {attempts + 1} attempts)"
            record(StepStatus.FAILED, None, error)
            log.error("invocation %s failed: %s", invocation_id, error)
            raise StepFailed(error) from exc
        passed_on = with_output(context, step.name, outcome.output)
        next_message = None
        if handoff is not None and index < len(workflow.steps) - 1:
            next_message = handoff(passed_on)
        standing = record(StepStatus.DONE, outcome, None, next_message)
        recorded.set(standing)
        if standing.get("handed_off"):
            handed_off.set(True)
        if standing["output"] is outcome.output:
            return passed_on  # ours stands
        return with_output(context, step.name, standing["output"])
