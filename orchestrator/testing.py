"""In-memory fakes of the orchestrator's stores, for tests that reach no Redis or PostgreSQL.

Each fake keeps the rules of the real store it stands for, on a clock the test controls:

- :class:`MemoryStepClaims` for :class:`~orchestrator.execution.claims.RedisStepClaims`
  (the Lua of ``execution/lua/``: claims with leases and their renewal, done records where
  the first result stands, stealing from a named holder, deaths counted on takeover,
  release, dispatch claims, snapshots, expiry);
- :class:`MemoryInvocationStore` for :class:`~orchestrator.store.invocations.InvocationStore`
  (idempotency keys, an end written only while ``queued``/``running``, step records kept
  once per index);
- :class:`MemoryBreakerStore` for the fleet's breaker store, :class:`MemoryLimiter` for the
  LLM limiter (both ship beside their Redis implementations);
- :class:`ManualClock` (time moves when the test says so) and :class:`FixedIdentity`.

A step runner built from these runs every decision it makes in production::

    clock = ManualClock()
    runner = StepRunner(claims=MemoryStepClaims(clock=clock), store=MemoryInvocationStore(),
                        executor=my_executor, identity=FixedIdentity("w1"),
                        workflows=my_registry, policy=RunnerPolicy(300, 5, 3600))
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from orchestrator.breakers.memory_store import MemoryBreakerStore
from orchestrator.constants import DRAINED_TTL_SECONDS, INFLIGHT_MIN_TTL_SECONDS
from orchestrator.errors import UnknownInvocation
from orchestrator.execution.claims import Begin, BeginState, Handoff
from orchestrator.invocation import Invocation, InvocationStatus, StepRecord, TokenUsage
from orchestrator.llm.memory_limiter import MemoryLimiter
from orchestrator.store.invocations import Unfinished, step_from_record

__all__ = ["FixedIdentity", "ManualClock", "MemoryBreakerStore", "MemoryInvocationStore",
           "MemoryLimiter", "MemoryStepClaims"]

Clock = Callable[[], float]


class ManualClock:
    """Seconds since the epoch that stand still until :meth:`advance` moves them."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _millis(clock: Clock) -> int:
    return math.floor(clock() * 1000 + 1e-6)


class FixedIdentity:
    """A claim identity: always ``owner``; the owners in ``dead`` are known gone."""

    def __init__(self, owner: str = "worker-1", dead: Iterable[str] = ()) -> None:
        self.name = owner
        self.dead = set(dead)

    def owner(self) -> str:
        return self.name

    def is_dead(self, owner: str) -> bool:
        return owner in self.dead


class MemoryStepClaims:
    """Step claims and in-flight records, one hash of fields per invocation, as in Redis:
    ``claim:<i>`` (``owner|expiry ms``), ``started:<i>``, ``deaths:<i>`` (claims taken
    over), ``done:<i>`` (the record's JSON) and ``dispatch``. A hash expires ``ttl``
    seconds after its last write."""

    def __init__(self, *, visibility_timeout: int = 3600, clock: Clock = time.time) -> None:
        self.clock = clock
        self.ttl = max(INFLIGHT_MIN_TTL_SECONDS, 2 * visibility_timeout)
        self._hashes: dict[str, dict[str, str]] = {}
        self._expires: dict[str, int] = {}
        self._drained: dict[tuple[str, int], int] = {}
        # Next steps' messages pushed with their records, in order (a broker's lists).
        self.handed_off: list[Handoff] = []
        self._lock = threading.Lock()

    def _hash(self, invocation_id: str, now: int) -> dict[str, str]:
        if self._expires.get(invocation_id, now + 1) <= now:
            self._hashes.pop(invocation_id, None)
            self._expires.pop(invocation_id, None)
        return self._hashes.setdefault(invocation_id, {})

    def _touch(self, invocation_id: str, now: int) -> None:
        self._expires[invocation_id] = now + self.ttl * 1000

    def _tidy(self, invocation_id: str) -> None:
        """An emptied hash is gone, as in Redis (and so is its expiry)."""
        if not self._hashes.get(invocation_id):
            self._hashes.pop(invocation_id, None)
            self._expires.pop(invocation_id, None)

    def begin(self, invocation_id: str, index: int, owner: str, lease: float,
              *, steal: str = "", with_records: bool = False) -> Begin:
        """Claim step ``index`` for ``lease`` seconds (replacing ``steal`` if it holds it);
        or report it done, or held by a live holder."""
        with self._lock:
            now = _millis(self.clock)
            fields = self._hash(invocation_id, now)
            try:
                cancelled = fields.get("cancelled")
                if cancelled is not None:
                    return Begin(BeginState.CANCELLED, reason=cancelled)
                done = fields.get(f"done:{index}")
                if done is not None:
                    return Begin(BeginState.DONE, record=json.loads(done))
                previous = ""
                claim = fields.get(f"claim:{index}")
                if claim:
                    holder, _, expires = claim.partition("|")
                    if int(expires) > now and holder != steal:
                        return Begin(BeginState.BUSY, holder=holder,
                                     remaining=(int(expires) - now) / 1000.0)
                    previous = holder
                deaths = 0
                if previous:
                    deaths = int(fields.get(f"deaths:{index}", "0")) + 1
                    fields[f"deaths:{index}"] = str(deaths)
                fields[f"claim:{index}"] = f"{owner}|{now + int(lease * 1000)}"
                fields[f"started:{index}"] = str(now)
                self._touch(invocation_id, now)
                records = None
                if with_records:
                    records = {int(name[5:]): json.loads(value)
                               for name, value in fields.items() if name.startswith("done:")}
                return Begin(BeginState.CLAIMED, previous=previous, now_ms=now, deaths=deaths,
                             records=records)
            finally:
                self._tidy(invocation_id)

    def is_cancelled(self, invocation_id: str) -> bool:
        with self._lock:
            return "cancelled" in self._hash(invocation_id, _millis(self.clock))

    def cancel(self, invocation_id: str, reason: str) -> None:
        """Every later delivery of the invocation's steps stops at its claim."""
        with self._lock:
            now = _millis(self.clock)
            self._hash(invocation_id, now)["cancelled"] = reason
            self._touch(invocation_id, now)

    def finish(self, invocation_id: str, index: int, owner: str, record: dict[str, Any],
               *, queue: str, handoff: Handoff | None = None) -> dict[str, Any]:
        """Record the step's result; returns the record that stands (the first one).
        A new record pushes ``handoff`` (onto :attr:`handed_off`)."""
        text = json.dumps(record, separators=(",", ":"))
        with self._lock:
            now = _millis(self.clock)
            fields = self._hash(invocation_id, now)
            standing = fields.get(f"done:{index}")
            if standing is not None:
                return dict(json.loads(standing))
            fields[f"done:{index}"] = text
            if handoff is not None:
                self.handed_off.append(handoff)
            bucket = (queue, now // 1000)
            self._drained[bucket] = self._drained.get(bucket, 0) + 1
            claim = fields.get(f"claim:{index}")
            if claim is not None and claim.startswith(owner + "|"):
                del fields[f"claim:{index}"]
            self._touch(invocation_id, now)
            return dict(json.loads(text))

    def release(self, invocation_id: str, index: int, owner: str) -> None:
        """Drop the claim if ``owner`` still holds it."""
        with self._lock:
            fields = self._hash(invocation_id, _millis(self.clock))
            claim = fields.get(f"claim:{index}")
            if claim is not None and claim.startswith(owner + "|"):
                del fields[f"claim:{index}"]
            self._tidy(invocation_id)

    def renew(self, held: list[tuple[str, int, str]], lease: float) -> list[bool]:
        """Extend each ``(invocation_id, index, owner)`` claim still held by its owner to
        ``lease`` seconds from now; False where it is held no more."""
        renewed: list[bool] = []
        with self._lock:
            now = _millis(self.clock)
            for invocation_id, index, owner in held:
                fields = self._hash(invocation_id, now)
                claim = fields.get(f"claim:{index}")
                mine = claim is not None and claim.startswith(owner + "|")
                if mine:
                    fields[f"claim:{index}"] = f"{owner}|{now + int(lease * 1000)}"
                renewed.append(mine)
                self._tidy(invocation_id)
        return renewed

    def claim_dispatch(self, invocation_id: str, *, stale_after: float = 30.0) -> bool:
        """True when the caller should publish the chain: nobody did, or a publisher
        began more than ``stale_after`` seconds ago and never finished."""
        with self._lock:
            now = _millis(self.clock)
            fields = self._hash(invocation_id, now)
            state = fields.get("dispatch")
            published = state == "done" or (
                state is not None and now - int(state) < int(stale_after * 1000))
            if not published:
                fields["dispatch"] = str(now)
                self._touch(invocation_id, now)
            self._tidy(invocation_id)
            return not published

    def mark_dispatched(self, invocation_id: str) -> None:
        with self._lock:
            now = _millis(self.clock)
            self._hash(invocation_id, now)["dispatch"] = "done"
            self._touch(invocation_id, now)

    def forget(self, invocation_id: str) -> None:
        with self._lock:
            self._hashes.pop(invocation_id, None)
            self._expires.pop(invocation_id, None)

    def snapshot(self, invocation_id: str) -> tuple[bool, dict[int, dict[str, Any]], set[int]]:
        """(dispatched, done records by index, indexes claimed by a running delivery)."""
        with self._lock:
            fields = dict(self._hash(invocation_id, _millis(self.clock)))
            self._tidy(invocation_id)
        records = {int(name[5:]): json.loads(value)
                   for name, value in fields.items() if name.startswith("done:")}
        running = {int(name[6:]) for name in fields if name.startswith("claim:")}
        return fields.get("dispatch") == "done", records, running - set(records)

    def drained(self, queue: str) -> int:
        """Steps recorded done on ``queue`` within the drained counters' lifetime."""
        with self._lock:
            oldest = _millis(self.clock) // 1000 - DRAINED_TTL_SECONDS
            return sum(n for (name, second), n in self._drained.items()
                       if name == queue and second > oldest)


@dataclass
class _Row:
    invocation: Invocation
    steps: dict[int, StepRecord] = field(default_factory=dict)


def _json(value: Any) -> Any:
    """``value`` as it comes back from a ``jsonb`` column."""
    return json.loads(json.dumps(value))


class MemoryInvocationStore:
    """Invocations and their step records, in memory; ``clock`` stands for ``now()``."""

    def __init__(self, clock: Clock = time.time) -> None:
        self.clock = clock
        self._rows: dict[str, _Row] = {}
        self._lock = threading.Lock()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def create(self, *, invocation_id: str, workflow: str, payload_json: str,
               step_count: int, idempotency_key: str | None,
               ) -> tuple[str, InvocationStatus | None]:
        """Insert a queued invocation; returns (id, None) when created, or the (id, status)
        of the invocation that already has ``idempotency_key``."""
        with self._lock:
            if idempotency_key is not None:
                for row in self._rows.values():
                    if row.invocation.idempotency_key == idempotency_key:
                        return row.invocation.id, row.invocation.status
            if invocation_id in self._rows:
                raise ValueError(f"invocation id {invocation_id} exists already")
            self._rows[invocation_id] = _Row(Invocation(
                id=invocation_id, workflow=workflow, status=InvocationStatus.QUEUED,
                payload=json.loads(payload_json), output=None, error=None, steps=(),
                tokens=TokenUsage(), created_at=self._now(), started_at=None,
                finished_at=None, idempotency_key=idempotency_key))
            return invocation_id, None

    def delete(self, invocation_id: str) -> None:
        with self._lock:
            self._rows.pop(invocation_id, None)

    def complete(self, invocation_id: str, *, status: InvocationStatus, output: Any,
                 error: str | None, steps: list[dict[str, Any]]) -> bool:
        """Write the finished invocation and its step records; False if it was finished
        already (step records of indexes not yet kept are added all the same, as the
        SQL's ``ON CONFLICT DO NOTHING`` does). Raises ``UnknownInvocation`` for steps of
        an invocation that does not exist (PostgreSQL's foreign key)."""
        with self._lock:
            row = self._rows.get(invocation_id)
            if row is None:
                if steps:
                    raise UnknownInvocation(f"no invocation with id {invocation_id!r}")
                return False
            for step in steps:
                index = int(step["idx"])
                if index not in row.steps:
                    row.steps[index] = step_from_record(index, _json(step))
            current = row.invocation
            if current.status not in (InvocationStatus.QUEUED, InvocationStatus.RUNNING):
                return False
            started = min((s["started_ms"] for s in steps), default=None)
            row.invocation = replace(
                current, status=status, output=_json(output), error=error,
                tokens=TokenUsage(sum(int(s.get("pt", 0)) for s in steps),
                                  sum(int(s.get("ct", 0)) for s in steps)),
                finished_at=self._now(),
                started_at=None if started is None else datetime.fromtimestamp(
                    started / 1000.0, tz=UTC))
            return True

    def unfinished_before(self, seconds: float, *, after: Unfinished | None = None,
                          limit: int = 200) -> list[Unfinished]:
        """Queued or running invocations created more than ``seconds`` ago, oldest first,
        from after ``after`` (the last of the previous page)."""
        cutoff = self.clock() - seconds
        start = (after.created_at, after.id) if after else (datetime.min.replace(tzinfo=UTC), "")
        with self._lock:
            found = sorted(
                (r.invocation for r in self._rows.values()
                 if r.invocation.status in (InvocationStatus.QUEUED, InvocationStatus.RUNNING)
                 and r.invocation.created_at.timestamp() < cutoff
                 and (r.invocation.created_at, r.invocation.id) > start),
                key=lambda inv: (inv.created_at, inv.id))
        return [Unfinished(inv.id, inv.workflow, dict(inv.payload), inv.created_at)
                for inv in found[:limit]]

    def mark_running(self, invocation_ids: list[str]) -> None:
        """Invocations whose first step began: ``queued`` becomes ``running`` (an end
        written meanwhile is left alone)."""
        with self._lock:
            for invocation_id in invocation_ids:
                row = self._rows.get(invocation_id)
                if row is not None and row.invocation.status is InvocationStatus.QUEUED:
                    row.invocation = replace(row.invocation, status=InvocationStatus.RUNNING,
                                             started_at=self._now())

    def status(self, invocation_id: str) -> InvocationStatus | None:
        with self._lock:
            row = self._rows.get(invocation_id)
            return None if row is None else row.invocation.status

    def get(self, invocation_id: str) -> Invocation | None:
        """The invocation with its recorded steps, or None when no such id exists."""
        with self._lock:
            row = self._rows.get(invocation_id)
            if row is None:
                return None
            return replace(row.invocation,
                           steps=tuple(row.steps[i] for i in sorted(row.steps)))

    def status_of(self, invocation_ids: list[str]) -> dict[str, InvocationStatus]:
        with self._lock:
            return {i: self._rows[i].invocation.status for i in invocation_ids
                    if i in self._rows}

    def finished_count(self, invocation_ids: list[str]) -> int:
        return sum(1 for s in self.status_of(invocation_ids).values()
                   if s in (InvocationStatus.SUCCEEDED, InvocationStatus.FAILED))

    def last_finished_at(self, invocation_ids: list[str]) -> float:
        """The latest ``finished_at`` among ``invocation_ids``, as a Unix timestamp;
        raises ``ValueError`` when none has finished."""
        wanted = set(invocation_ids)
        with self._lock:
            found = [r.invocation.finished_at for i, r in self._rows.items()
                     if i in wanted and r.invocation.finished_at is not None]
        if not found:
            raise ValueError("none of these invocations has finished")
        return max(found).timestamp()

    def counts(self) -> dict[str, int]:
        with self._lock:
            found: dict[str, int] = {}
            for row in self._rows.values():
                status = row.invocation.status.value
                found[status] = found.get(status, 0) + 1
            return found
