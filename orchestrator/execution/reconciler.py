"""The reconciler: the safety net under the progress guarantee.

The normal paths (retries counted by the runner, recording that never acks a lost result,
leases with a heartbeat, the poison-message counter) finish every invocation on their
own. The reconciler is for what they cannot see: a message deleted from the broker, a
Redis that lost its queues, a producer that died between its insert and its publish, a
delivery whose errors outlasted every retry. It also keeps the invocations table from
growing for ever: each pass deletes, in batches, the invocations that finished more than
``ORCH_RETENTION_DAYS`` (default 30) ago.

Every ``interval`` seconds, the active reconciler (one per fleet: a lease in Redis; the
others stand by) looks at invocations still ``queued`` or ``running`` that are older than
``ORCH_STALL_SECONDS``. One is **stalled** when no step of it holds a live claim and none
started, ended or was re-dispatched in the last ``ORCH_STALL_SECONDS`` (plus the time its
next queue needs to drain to it, at the measured rate). A stalled invocation is:
- completed, if its steps' records already say how it ended (PostgreSQL missed the end);
- re-dispatched from its first unfinished step, with the outputs of the steps before it,
  at most ``ORCH_RECONCILE_MAX_REDISPATCHES`` times;
- then failed, with the reason.
Invocations whose next queue holds messages but drains nothing (no consumer), or that an
operator holds (a paused queue, messages parked by ``drain --park``), are waiting, not
stalled: re-sending would not run them sooner.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from orchestrator.constants import (
    QUEUE_PARKED,
    QUEUE_PAUSES,
    QUEUE_RESUMED,
    RECONCILER_LEADER,
)
from orchestrator.errors import UnknownWorkflow
from orchestrator.execution.admission import drain_rate
from orchestrator.execution.claims import Progress, RedisStepClaims
from orchestrator.execution.dispatch import dispatch
from orchestrator.invocation import InvocationStatus, StepStatus
from orchestrator.lua import script
from orchestrator.store.counts import InvocationCounts
from orchestrator.store.invocations import InvocationStore, Unfinished
from orchestrator.telemetry import count
from orchestrator.workflow import Registry

log = logging.getLogger(__name__)

OWNER = "reconciler"
# Retention deletes this many invocations per statement, at most this many statements a
# pass: short transactions, and a backlog cleared over a few passes.
RETENTION_BATCH = 1000
RETENTION_BATCHES = 10


@dataclass
class Report:
    """What one pass did."""

    checked: int = 0
    completed: list[str] = field(default_factory=list)
    redispatched: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # workflow not registered here
    errors: list[str] = field(default_factory=list)


class Reconciler:
    """Finds stalled invocations and moves them on (see the module docstring)."""

    def __init__(self, *, store: InvocationStore, claims: RedisStepClaims,
                 client: redis.Redis, producer: Celery, workflows: Registry,
                 stall_seconds: float, max_redispatches: int, owner: str,
                 retention_days: int = 0) -> None:
        self.store = store
        self.claims = claims
        self.client = client
        self.producer = producer
        self.workflows = workflows
        self.stall_ms = int(stall_seconds * 1000)
        self.stall_seconds = stall_seconds
        self.max_redispatches = max_redispatches
        self.retention_days = retention_days
        self._queues: dict[str, tuple[Any, ...]] = {}  # queue -> its state, this pass
        self.owner = owner
        self.interval = max(0.5, min(30.0, stall_seconds / 4))
        self._lead = script(client, "orchestrator.execution", "leader")
        # Each pass folds the kept invocation counts, so they stay small without an
        # exporter scraping (store/counts.py).
        self.counts = InvocationCounts(store.engine)

    def lead(self) -> bool:
        """Take or keep the fleet's reconciler lease; True while this one is active."""
        lease_ms = int(self.interval * 3 * 1000)
        return bool(self._lead(keys=[RECONCILER_LEADER], args=[self.owner, lease_ms]))

    def run(self, stop: threading.Event) -> None:
        """Reconcile until ``stop`` is set; stand by while another reconciler leads."""
        leading = False
        while not stop.is_set():
            try:
                now_leading = self.lead()
                if now_leading != leading:
                    log.info("reconciler %s: %s", self.owner,
                             "active" if now_leading else "standing by")
                    leading = now_leading
                if leading:
                    self.expire()
                    self.counts.fold()
                    report = self.reconcile_once()
                    if report.completed or report.redispatched or report.failed:
                        log.info("reconciled %d stalled invocations: %d completed, "
                                 "%d re-dispatched, %d failed", report.checked,
                                 len(report.completed), len(report.redispatched),
                                 len(report.failed))
            except Exception:
                # Redis or PostgreSQL away: the next pass tries again.
                log.exception("reconciler pass failed; next in %.1fs", self.interval)
            stop.wait(self.interval)
        if leading and self.client.get(RECONCILER_LEADER) == self.owner.encode():
            self.client.delete(RECONCILER_LEADER)

    def expire(self) -> int:
        """Delete invocations finished more than ``ORCH_RETENTION_DAYS`` ago, in batches,
        at most ``RETENTION_BATCHES`` per pass (the rest wait for the next); returns how
        many went."""
        if self.retention_days <= 0:
            return 0
        deleted = 0
        for _ in range(RETENTION_BATCHES):
            batch = self.store.delete_finished_before(self.retention_days,
                                                      limit=RETENTION_BATCH)
            deleted += batch
            if batch < RETENTION_BATCH:
                break
        if deleted:
            count(self.client, "reconciler_actions:expired", deleted)
            log.info("deleted %d invocations finished more than %d days ago", deleted,
                     self.retention_days)
        return deleted

    def reconcile_once(self, *, act: bool = True) -> Report:
        """One pass over the unfinished invocations older than the stall time. With
        ``act=False`` nothing changes: the report says what a pass would do (``status``
        shows it as the stalled invocations)."""
        report = Report()
        self._queues = {}
        after: Unfinished | None = None
        while True:
            page = self.store.unfinished_before(self.stall_seconds, after=after)
            if not page:
                return report
            for invocation in page:
                report.checked += 1
                try:
                    self._reconcile(invocation, report, act=act)
                except UnknownWorkflow as exc:
                    # Deployed without this workflow's module: whoever has it reconciles.
                    report.unknown.append(invocation.id)
                    log.warning("invocation %s not reconciled here: %s", invocation.id, exc)
                except Exception:
                    # One invocation must not keep the others from being reconciled.
                    report.errors.append(invocation.id)
                    log.exception("reconciling invocation %s failed", invocation.id)
            after = page[-1]

    def _reconcile(self, invocation: Unfinished, report: Report, *, act: bool) -> None:
        progress = self.claims.progress(invocation.id)
        if progress.live_claims:
            return  # a step is running and renewing its claim
        idle_ms = progress.now_ms - max(progress.last_progress_ms, invocation.created_ms)
        if idle_ms < self.stall_ms:
            return
        workflow = self.workflows.get(invocation.workflow)
        records = progress.records
        ending = next((records[i] for i in sorted(records)
                       if records[i]["status"] == StepStatus.FAILED.value), None)
        if ending is None and len(records) == len(workflow.steps):
            ending = records[len(workflow.steps) - 1]
        if ending is not None:
            if act:
                self._complete(invocation, records, ending)
            report.completed.append(invocation.id)
            return
        start = next(i for i in range(len(workflow.steps)) if i not in records)
        step = workflow.step_at(start)
        if not self._due(step.kind.queue, idle_ms):
            return
        if progress.redispatches >= self.max_redispatches:
            if not act:
                report.failed.append(invocation.id)
                return
            self._fail(invocation, progress, start,
                       f"no progress for {idle_ms / 1000:.0f}s at step {step.name} after "
                       f"{progress.redispatches} re-dispatches (ORCH_STALL_SECONDS="
                       f"{self.stall_seconds:.0f})")
            report.failed.append(invocation.id)
            return
        if not act:
            report.redispatched.append(invocation.id)
            return
        count_now = self.claims.mark_redispatched(invocation.id)
        context = {"invocation_id": invocation.id, "workflow": workflow.name,
                   "payload": invocation.payload,
                   "outputs": {workflow.step_at(i).name: records[i]["output"]
                               for i in sorted(records)}}
        dispatch(self.producer, workflow, context, start=start)
        count(self.client, "reconciler_actions:redispatched")
        log.warning("invocation %s made no progress for %.0fs: re-dispatched from step %s "
                    "(%d of %d)", invocation.id, idle_ms / 1000, step.name, count_now,
                    self.max_redispatches)
        report.redispatched.append(invocation.id)

    def _due(self, queue: str, idle_ms: int) -> bool:
        """Whether the next step's queue should have reached the invocation by now.

        Not while an operator holds the queue (paused, or messages parked by `drain
        --park`): the invocation waits on them. After a resume, idle time counts from it.
        The queue is looked at once a pass, before this pass re-dispatched anything to it:
        its own re-dispatches must not make the next stalled invocation look like waiting.
        """
        if queue not in self._queues:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hexists(QUEUE_PAUSES, queue)
                pipe.llen(QUEUE_PARKED.format(queue=queue))
                pipe.hget(QUEUE_RESUMED, queue)
                pipe.llen(queue)
                pipe.time()
                self._queues[queue] = tuple(pipe.execute())
        paused, parked, resumed, depth, now = self._queues[queue]
        if paused or parked:
            return False
        if resumed is not None:
            idle_ms = min(idle_ms, now[0] * 1000 + now[1] // 1000 - int(resumed))
        if depth == 0:
            return idle_ms >= self.stall_ms
        rate = drain_rate(self.client, queue)
        if rate <= 0:
            return False  # waiting on a queue nothing drains: re-sending would not help
        return idle_ms >= self.stall_ms + depth / rate * 1000

    def _complete(self, invocation: Unfinished, records: dict[int, dict[str, object]],
                  ending: dict[str, object]) -> None:
        failed = ending["status"] == StepStatus.FAILED.value
        self.store.complete(
            invocation.id,
            status=InvocationStatus.FAILED if failed else InvocationStatus.SUCCEEDED,
            output=None if failed else ending["output"],
            error=str(ending["error"]) if ending.get("error") else None,
            steps=[{"idx": i, **r} for i, r in sorted(records.items())])
        count(self.client, "reconciler_actions:completed")
        log.warning("invocation %s had ended (%s) without PostgreSQL knowing: completed",
                    invocation.id, ending["status"])

    def _fail(self, invocation: Unfinished, progress: Progress, start: int,
              error: str) -> None:
        workflow = self.workflows.get(invocation.workflow)
        step = workflow.step_at(start)
        record = {"name": step.name, "kind": step.kind.value,
                  "status": StepStatus.FAILED.value, "attempts": 0, "output": None,
                  "error": error, "fallback": False, "pt": 0, "ct": 0,
                  "started_ms": progress.now_ms, "finished_ms": progress.now_ms}
        records = {**progress.records, start: record}
        self.store.complete(invocation.id, status=InvocationStatus.FAILED, output=None,
                            error=error, steps=[{"idx": i, **r} for i, r in
                                                sorted(records.items())])
        # A late delivery of this step now finds it ended and runs nothing.
        self.claims.finish(invocation.id, start, OWNER, record, queue=step.kind.queue)
        count(self.client, "reconciler_actions:failed")
        log.error("invocation %s failed: %s", invocation.id, error)
