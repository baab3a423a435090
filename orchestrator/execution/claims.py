"""In-flight step records and claims, in Redis beside the broker's messages.

While an invocation runs, each step delivery goes through here: ``begin`` claims the step
(or reports it done, or held by a live delivery elsewhere), ``finish`` records its result
(the first result recorded stands). The finished invocation, steps included, is then
written to PostgreSQL in one statement. Redis ``TIME`` is the clock of step timestamps.

These records are exactly as durable as the messages that carry the workflow: both live
in the broker's Redis (appendonly in production).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from orchestrator.constants import (
    DRAINED,
    DRAINED_TTL_SECONDS,
    INFLIGHT,
    INFLIGHT_MIN_TTL_SECONDS,
)
from orchestrator.lua import script


class BeginState(enum.Enum):
    CLAIMED = "claimed"
    DONE = "done"
    BUSY = "busy"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Begin:
    state: BeginState
    record: dict[str, Any] | None = None
    holder: str | None = None
    remaining: float = 0.0
    previous: str = ""
    now_ms: int = 0
    # Done records of the invocation's steps, when ``begin`` was asked for them.
    records: dict[int, dict[str, Any]] | None = None
    # Deliveries of this step that died holding its claim (taken over since).
    deaths: int = 0
    reason: str = ""  # why the invocation was cancelled

    @property
    def took_over(self) -> bool:
        """True when an earlier delivery had claimed this step and did not finish it."""
        return bool(self.previous)


@dataclass(frozen=True)
class Handoff:
    """The next step's broker message, pushed by ``finish`` together with the record of
    the step before it: one round trip, and no record without its next message."""

    key: str  # the broker's list of the next step's queue
    message: str  # the message exactly as the broker keeps it


@dataclass(frozen=True)
class Progress:
    """What an in-flight hash says about an invocation's progress (for the reconciler)."""

    now_ms: int
    records: dict[int, dict[str, Any]]
    live_claims: set[int]  # steps whose claim's lease has not run out
    last_progress_ms: int  # latest step start, step end or re-dispatch (0: none)
    redispatches: int


class StepClaims(Protocol):
    """Where step deliveries claim steps and record results (Redis, or a fake in tests)."""

    def begin(self, invocation_id: str, index: int, owner: str, lease: float,
              *, steal: str = "", with_records: bool = False) -> Begin: ...

    def finish(self, invocation_id: str, index: int, owner: str, record: dict[str, Any],
               *, queue: str, handoff: Handoff | None = None) -> dict[str, Any]: ...

    def release(self, invocation_id: str, index: int, owner: str) -> None: ...

    def renew(self, held: list[tuple[str, int, str]], lease: float) -> list[bool]: ...

    def claim_dispatch(self, invocation_id: str, *, stale_after: float = 30.0) -> bool: ...

    def mark_dispatched(self, invocation_id: str) -> None: ...

    def forget(self, invocation_id: str) -> None: ...

    def is_cancelled(self, invocation_id: str) -> bool: ...

    def snapshot(self, invocation_id: str) -> tuple[bool, dict[int, dict[str, Any]], set[int]]:
        ...


class RedisStepClaims:
    """The in-flight hash of each running invocation, in the broker's Redis."""

    def __init__(self, client: redis.Redis, *, visibility_timeout: int) -> None:
        self.client = client
        self.ttl = max(INFLIGHT_MIN_TTL_SECONDS, 2 * visibility_timeout)
        self._begin = script(client, "orchestrator.execution", "claim_begin")
        self._finish = script(client, "orchestrator.execution", "claim_finish")
        self._release = script(client, "orchestrator.execution", "claim_release")
        self._dispatch = script(client, "orchestrator.execution", "dispatch_claim")
        self._renew = script(client, "orchestrator.execution", "claim_renew")
        self._redispatch = script(client, "orchestrator.execution", "redispatch")
        self._reopen = script(client, "orchestrator.execution", "reopen")

    @staticmethod
    def key(invocation_id: str) -> str:
        return INFLIGHT.format(invocation_id=invocation_id)

    def begin(self, invocation_id: str, index: int, owner: str, lease: float,
              *, steal: str = "", with_records: bool = False) -> Begin:
        """Claim step ``index`` for ``lease`` seconds (replacing ``steal`` if it holds it).

        ``with_records``: a claimed ``Begin`` also carries the done records of the other
        steps (a step that ends the invocation needs them), saving a round trip.
        """
        reply = self._begin(
            keys=[self.key(invocation_id)],
            args=[index, owner, int(lease * 1000), self.ttl, steal, int(with_records)],
        )
        state = reply[0].decode()
        if state == "cancelled":
            return Begin(BeginState.CANCELLED, reason=reply[1].decode())
        if state == "done":
            return Begin(BeginState.DONE, record=json.loads(reply[1]))
        if state == "busy":
            return Begin(BeginState.BUSY, holder=reply[1].decode(),
                         remaining=int(reply[2]) / 1000.0)
        records = None
        if with_records:
            pairs = reply[4:]
            records = {int(pairs[i][5:]): json.loads(pairs[i + 1])
                       for i in range(0, len(pairs), 2)}
        return Begin(BeginState.CLAIMED, previous=reply[1].decode(), now_ms=int(reply[2]),
                     deaths=int(reply[3]), records=records)

    def renew(self, held: list[tuple[str, int, str]], lease: float) -> list[bool]:
        """Extend each ``(invocation_id, index, owner)`` claim still held by its owner to
        ``lease`` seconds from now, in one round trip; False where it is held no more."""
        if not held:
            return []
        args: list[Any] = [int(lease * 1000)]
        for _, index, owner in held:
            args += [index, owner]
        reply = self._renew(keys=[self.key(i) for i, _, _ in held], args=args)
        return [bool(int(flag)) for flag in reply]

    def finish(self, invocation_id: str, index: int, owner: str, record: dict[str, Any],
               *, queue: str, handoff: Handoff | None = None) -> dict[str, Any]:
        """Record the step's result; returns the record that stands (the first one).

        ``handoff``: the next step's message, pushed onto its queue in the same script
        when (and only when) this record is the one that stands.
        """
        reply = self._finish(
            keys=[self.key(invocation_id)],
            args=[index, owner, json.dumps(record, separators=(",", ":")), self.ttl,
                  DRAINED.format(queue=queue), DRAINED_TTL_SECONDS,
                  *((handoff.key, handoff.message) if handoff else ())],
        )
        if reply[0] == b"recorded":
            return record
        return dict(json.loads(reply[1]))

    def release(self, invocation_id: str, index: int, owner: str) -> None:
        """Give up our claim (before a retry), so the next delivery claims it at once."""
        self._release(keys=[self.key(invocation_id)], args=[index, owner])

    def claim_dispatch(self, invocation_id: str, *, stale_after: float = 30.0) -> bool:
        """True when the caller should publish the chain: nobody did, or a publisher
        began more than ``stale_after`` seconds ago and never finished (it died)."""
        return bool(self._dispatch(keys=[self.key(invocation_id)],
                                   args=["claim", self.ttl, int(stale_after * 1000)]))

    def mark_dispatched(self, invocation_id: str) -> None:
        self._dispatch(keys=[self.key(invocation_id)], args=["done", self.ttl, 0])

    def forget(self, invocation_id: str) -> None:
        self.client.delete(self.key(invocation_id))

    def progress(self, invocation_id: str) -> Progress:
        """The invocation's records, live claims and latest sign of progress."""
        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        pipe.hgetall(self.key(invocation_id))
        (seconds, micros), raw = pipe.execute()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        records: dict[int, dict[str, Any]] = {}
        live: set[int] = set()
        last = 0
        redispatches = 0
        for field, value in raw.items():
            name, _, index = field.decode().partition(":")
            if name == "done":
                record = json.loads(value)
                records[int(index)] = record
                last = max(last, int(record.get("finished_ms") or 0))
            elif name == "claim":
                if int(value.decode().rpartition("|")[2]) > now_ms:
                    live.add(int(index))
            elif name == "started":
                last = max(last, int(value))
            elif name == "redispatched":
                count_text, _, at = value.decode().partition("|")
                redispatches = int(count_text)
                last = max(last, int(at or 0))
        return Progress(now_ms, records, live - set(records), last, redispatches)

    def is_cancelled(self, invocation_id: str) -> bool:
        return bool(self.client.hexists(self.key(invocation_id), "cancelled"))

    def cancel(self, invocation_id: str, reason: str) -> None:
        """From now on every delivery of the invocation's steps stops at its claim."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.key(invocation_id), "cancelled", reason)
        pipe.expire(self.key(invocation_id), self.ttl)
        pipe.execute()

    def reopen(self, invocation_id: str, done: dict[int, dict[str, Any]]) -> int:
        """Ready the hash for a replay (see ``lua/reopen.lua``), restoring ``done`` records
        it no longer has; returns the index of the first step to run again."""
        args: list[Any] = [self.ttl]
        for index, record in sorted(done.items()):
            args += [index, json.dumps(record, separators=(",", ":"))]
        return int(self._reopen(keys=[self.key(invocation_id)], args=args))

    def mark_redispatched(self, invocation_id: str) -> int:
        """Count one re-dispatch of a stalled invocation (now, in Redis time); returns the
        count. A re-dispatch is progress: the next one waits a whole stall period."""
        return int(self._redispatch(keys=[self.key(invocation_id)], args=[self.ttl]))

    def snapshot(self, invocation_id: str) -> tuple[bool, dict[int, dict[str, Any]], set[int]]:
        """(dispatched, done records by index, indexes claimed by a running delivery)."""
        raw = self.client.hgetall(self.key(invocation_id))
        dispatched = raw.get(b"dispatch") == b"done"
        records: dict[int, dict[str, Any]] = {}
        running: set[int] = set()
        for field, value in raw.items():
            name = field.decode()
            if name.startswith("done:"):
                records[int(name[5:])] = json.loads(value)
            elif name.startswith("claim:"):
                running.add(int(name[6:]))
        return dispatched, records, running - set(records)
