"""The flusher: persists a shard's dirty records to PostgreSQL, losing none.

Each round reads up to ``batch`` of the oldest dirty records that have been dirty for
at least the coalescing window (``coalesce``), writes them in one
version-guarded statement (a newer version in PostgreSQL is never overwritten by an
older one, whatever the order of flushes) and then marks clean only the records still at
the flushed version. A flusher killed mid-round leaves its records dirty: the next round,
of this flusher or another, writes them again, harmlessly. One flusher per shard is
active at a time (a lease), so more can run for availability.

The coalescing window is what makes write-back cheaper than writing through: every
write a record takes while it waits goes to PostgreSQL as one row. A record's dirty
time is when it *first* became dirty, so a key written without pause is still flushed
within the window (plus a round) of that first write, never put off. Records past the
window are flushed back to back in batches however many there are; only records inside
it wait, and the flusher sleeps ``interval`` when nothing is due.

It supervises itself:
- any error of a round (Redis, PostgreSQL, anything else) is logged with its cause and
  the round retried with backoff; :meth:`Flusher.run` never raises, and
  :func:`run_flushers` reports a thread that died anyway, so the process exits non-zero
  instead of living on without it;
- a flusher that cannot reach PostgreSQL for a whole lease length (a partition between
  its host and the database) lets its lease go and stands by for half as long (standby
  flushers ask for the lease every quarter), so another flusher that can reach it takes
  the shard; alone, it takes the lease back and goes on retrying;
- a record PostgreSQL refuses (a data error, not an outage: ``\\u0000`` in a value that
  an older version or another client wrote straight into Redis, a key too long) or one
  that is not a JSON object is **quarantined**: set aside with the reason in the shard's
  ``orch:state-quarantine`` hash, out of the dirty index, kept in Redis; the rest of the
  batch is flushed. Writing the key again takes it out of quarantine once the new
  version is flushed.

A record is marked clean only when PostgreSQL took its version, or already holds exactly
it (a round that died before marking it). One PostgreSQL holds at an equal or newer
version with other content is reconciled instead (:func:`orchestrator.state.writeback.
reconcile`): a copy older than PostgreSQL's, which a restored or failed-over Redis
brings back, gives way to PostgreSQL's; a second history is kept aside, with a warning.
A round also notices when the shard's Redis is another server than at the last round (a
restart, a restore, a failover) and says what was at risk.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import redis
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from orchestrator.constants import (
    STATE_CLEAN_TTL_SECONDS,
    STATE_COALESCE_SECONDS,
    STATE_DIRTY,
    STATE_FLUSH_INTERVAL_SECONDS,
    STATE_FLUSH_LAGS,
    STATE_FLUSHER_LEASE,
    STATE_QUARANTINE,
    STATE_RECORD,
)
from orchestrator.lua import script
from orchestrator.state.writeback import Shard, reconcile
from orchestrator.store.state_rows import StateRows, StoredState, is_outage

log = logging.getLogger(__name__)
LAG_SAMPLES = 10_000
# A round's reads and its marking clean go to Redis this many records at a time, each
# chunk its own round trip: Redis runs a script, and a client's pipeline, to the end
# before it serves anyone else, and the state writers' acknowledgements wait behind it
# (500 records in one script held them ~3 ms, past their p99).
REDIS_CHUNK = 50
_T = TypeVar("_T")
# A failing round is logged at once, then at most this often while its cause stays the
# same (each retry still happens, with backoff).
REPEAT_LOG_SECONDS = 30.0
_RUN_ID = re.compile(rb"^run_id:(\w+)", re.MULTILINE)


@dataclass(frozen=True)
class RoundResult:
    read: int
    cleaned: int
    quarantined: int = 0


@dataclass(frozen=True)
class _Pending:
    record_key: str
    key: str
    version: bytes  # as read, compared as such when quarantining
    value: bytes = b""
    epoch: bytes = b""


def cause(exc: BaseException) -> str:
    """An error in one line, naming the driver's own error. For SQLAlchemy errors only
    the driver's message: SQLAlchemy's own text quotes the statement's parameters, which
    hold state values."""
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__


def _where(exc: BaseException, shard: str) -> str:
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | redis.BusyLoadingError):
        return f"Redis shard {shard} unavailable"
    if isinstance(exc, redis.RedisError):
        return f"Redis shard {shard} failed"
    if isinstance(exc, SQLAlchemyError):
        return "PostgreSQL unavailable" if is_outage(exc) else "PostgreSQL failed"
    return "round failed"


class Flusher:
    """Drains one shard's dirty index into PostgreSQL."""

    def __init__(self, shard: Shard, rows: StateRows, *, owner: str, batch: int = 500,
                 interval: float = STATE_FLUSH_INTERVAL_SECONDS,
                 coalesce: float = STATE_COALESCE_SECONDS, lease_seconds: float = 10.0,
                 pace: float = 0.0, max_backoff: float = 2.0) -> None:
        self.shard = shard
        self.rows = rows
        self.owner = owner
        self.batch = batch
        self.interval = interval
        self.coalesce_ms = int(coalesce * 1000)
        self.pace = pace
        self.max_backoff = max_backoff
        self.lease_ms = int(lease_seconds * 1000)
        self.prefix_len = len(STATE_RECORD.format(key=""))
        self.quarantine = script(shard.client, "orchestrator.state", "quarantine")
        # The shard's server (run_id), its dirty count and when, as of the last round.
        self.server: tuple[str, int, float] | None = None
        self._renewed = -math.inf  # when the lease was last taken or renewed (monotonic)
        self._standby_until = -math.inf  # no lease taken before this (monotonic)

    def flush_once(self) -> RoundResult:
        """One round. Raises ``redis.RedisError`` or ``SQLAlchemyError`` when the shard
        or PostgreSQL fails (nothing is marked clean then); a record PostgreSQL refuses
        is quarantined, not raised."""
        client, wire = self.shard.client, self.shard.wire
        # The shard's clock, not this host's: dirty times are the shard's TIME.
        seconds, micros = wire.call("TIME")
        read_at_ms = int(seconds) * 1000 + int(micros) // 1000
        raw_keys, quarantined_before, server, waiting = wire.pipeline([
            ("ZRANGEBYSCORE", STATE_DIRTY, "-inf", read_at_ms - self.coalesce_ms,
             "LIMIT", 0, self.batch),
            ("HLEN", STATE_QUARANTINE),
            ("INFO", "server"),
            ("ZCARD", STATE_DIRTY),
        ])
        self._notice(_run_id(server), int(waiting))
        record_keys = [k.decode() for k in raw_keys]
        if not record_keys:
            return RoundResult(0, 0)
        values: list[list[bytes | None]] = []
        for chunk in _chunks(record_keys):
            values += wire.evalsha(self.shard.records, chunk, [])
        rows: list[dict[str, object]] = []
        pending: dict[str, _Pending] = {}
        refused: list[tuple[_Pending, str]] = []
        for record_key, (value, version, epoch) in zip(record_keys, values, strict=True):
            if version is None or not value:
                client.zrem(STATE_DIRTY, record_key)  # nothing to persist
                continue
            found = _Pending(record_key, record_key[self.prefix_len:], version, value,
                             epoch or b"")
            row, problem = _row(found.key, value, version)
            if row is None:
                refused.append((found, problem))
                continue
            rows.append(row)
            pending[found.key] = found
        upserted = self.rows.upsert_newer(rows)
        for refusal in upserted.refused:
            refused.append((pending.pop(refusal.key), refusal.reason))
        set_aside = sum(self._set_aside(found, reason) for found, reason in refused)
        for key in [k for k in pending if k not in upserted.written]:
            self._not_taken(pending.pop(key), upserted.held.get(key), pending)
        flushed = list(pending.values())
        cleaned = sum(int(wire.evalsha(
            self.shard.clean,
            [STATE_DIRTY, STATE_FLUSH_LAGS, *(p.record_key for p in chunk)],
            [STATE_CLEAN_TTL_SECONDS, LAG_SAMPLES, read_at_ms, *(int(p.version) for p in chunk)],
        )) for chunk in _chunks(flushed))
        if flushed and int(quarantined_before):
            # Written again and flushed since it was set aside: out of quarantine.
            client.hdel(STATE_QUARANTINE, *(p.key for p in flushed))
        return RoundResult(len(record_keys), cleaned, set_aside)

    def _notice(self, run_id: str, waiting: int) -> None:
        if self.server is not None and self.server[0] != run_id:
            log.warning(
                "flusher %s: the shard's Redis is another server than at the last round "
                "(server changed: run_id %s... now %s...): a restart, a restore or a "
                "failover. Writes acknowledged there and not yet flushed are lost unless "
                "this server holds them (%d record(s) were waiting %.1fs ago); records it "
                "holds are checked against PostgreSQL before their next use",
                self.shard.name, self.server[0][:8], run_id[:8], self.server[1],
                time.monotonic() - self.server[2])
        self.server = (run_id, waiting, time.monotonic())

    def _not_taken(self, found: _Pending, held: StoredState | None,
                   pending: dict[str, _Pending]) -> None:
        """A row PostgreSQL did not write: it holds the same version or a newer one.
        Marked clean (back in ``pending``) only if it holds exactly this record."""
        if held is None:
            return  # the row is gone since: stays dirty, the next round writes it
        if held.version == int(found.version) and held.value == json.loads(found.value):
            pending[found.key] = found  # an earlier round wrote it, then died
            return
        outcome = reconcile(self.shard, found.key, held, version=found.version,
                            value=found.value, epoch=found.epoch)
        if outcome == "adopted":
            log.warning("flusher %s: state %r was dirty at version %s, older than "
                        "PostgreSQL's %d (the Redis data came back older): replaced by "
                        "PostgreSQL's, which descends from it", self.shard.name,
                        found.key, found.version.decode(), held.version)

    def _set_aside(self, found: _Pending, reason: str) -> int:
        done = int(self.quarantine(keys=[STATE_DIRTY, STATE_QUARANTINE, found.record_key],
                                   args=[found.version, found.key, reason]))
        if done:
            log.error("flusher %s: state %r quarantined, not flushed: %s (it stays in "
                      "Redis; `orchestrator status` lists it)", self.shard.name, found.key,
                      reason)
        return done

    def _hold_lease(self) -> bool:
        """Take or renew the shard's lease. Renewed at most every quarter of its
        length: a round is not three more round trips."""
        now = time.monotonic()
        if now < self._standby_until:
            return False
        if now - self._renewed < self.lease_ms / 4000:
            return True
        client = self.shard.client
        held = bool(client.set(STATE_FLUSHER_LEASE, self.owner, nx=True, px=self.lease_ms))
        if not held and client.get(STATE_FLUSHER_LEASE) == self.owner.encode():
            client.pexpire(STATE_FLUSHER_LEASE, self.lease_ms)
            held = True
        self._renewed = time.monotonic() if held else -math.inf
        return held

    def run(self, stop: threading.Event) -> None:
        """Flush until ``stop`` is set. Never raises: a failing round (Redis, PostgreSQL,
        anything) is logged with its cause and retried with backoff, up to
        ``max_backoff`` seconds apart, for as long as it takes."""
        failures = 0
        logged: tuple[str, float] | None = None  # (what failed, when it was logged)
        no_postgres_since: float | None = None  # monotonic, while PostgreSQL fails
        while not stop.is_set():
            try:
                if not self._hold_lease():
                    stop.wait(self.lease_ms / 4000)
                    continue
                result = self.flush_once()
            except Exception as exc:
                self._renewed = -math.inf  # the lease is checked again before the retry
                failures += 1
                delay = min(self.interval * 2 ** min(failures, 16), self.max_backoff)
                logged = self._report(exc, failures, delay, logged)
                if isinstance(exc, SQLAlchemyError):
                    no_postgres_since = no_postgres_since or time.monotonic()
                    if time.monotonic() - no_postgres_since >= self.lease_ms / 1000:
                        self._stand_by(time.monotonic() - no_postgres_since)
                        no_postgres_since = None
                else:
                    no_postgres_since = None
                stop.wait(delay)
                continue
            no_postgres_since = None
            if failures:
                log.info("flusher %s: flushing again after %d failed rounds",
                         self.shard.name, failures)
                failures, logged = 0, None
            if result.read < self.batch:
                stop.wait(self.interval)
            elif self.pace:
                stop.wait(self.pace)
        self._release_lease()

    def _stand_by(self, failing: float) -> None:
        """Let the lease go and take none for half a lease length: a flusher that can
        reach PostgreSQL takes the shard meanwhile (a standby asks every quarter)."""
        log.warning("flusher %s: PostgreSQL has failed for %.0fs; letting the shard's lease "
                    "go for %.0fs so a flusher that reaches it can take over (records stay "
                    "dirty in Redis meanwhile)", self.shard.name, failing, self.lease_ms / 2000)
        self._release_lease()
        self._renewed = -math.inf
        self._standby_until = time.monotonic() + self.lease_ms / 2000

    def _release_lease(self) -> None:
        try:
            if self.shard.client.get(STATE_FLUSHER_LEASE) == self.owner.encode():
                self.shard.client.delete(STATE_FLUSHER_LEASE)
        except redis.RedisError as exc:
            log.warning("flusher %s: lease not released (%s); it expires in %.0fs",
                        self.shard.name, cause(exc), self.lease_ms / 1000)

    def _report(self, exc: Exception, failures: int, delay: float,
                logged: tuple[str, float] | None) -> tuple[str, float] | None:
        what = f"{_where(exc, self.shard.name)} ({cause(exc)})"
        now = time.monotonic()
        if logged is not None and logged[0] == what and now - logged[1] < REPEAT_LOG_SECONDS:
            return logged
        unexpected = not isinstance(exc, redis.RedisError | SQLAlchemyError)
        log.warning("flusher %s: %s; %d failed round(s) so far, retrying in %.2fs; "
                    "unflushed records stay dirty", self.shard.name, what, failures, delay,
                    exc_info=unexpected)
        return what, now


def _run_id(info: bytes) -> str:
    """The ``run_id`` in a server's ``INFO server`` text."""
    found = _RUN_ID.search(info)
    return found.group(1).decode() if found else ""


def _chunks(items: list[_T]) -> Iterator[list[_T]]:
    for start in range(0, len(items), REDIS_CHUNK):
        yield items[start:start + REDIS_CHUNK]


def _row(key: str, value: bytes, version: bytes) -> tuple[dict[str, object] | None, str]:
    """The row to write, or ``None`` and why it cannot be one."""
    try:
        number = int(version)
    except ValueError:
        return None, "its version is not a whole number"
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        return None, f"its value is not JSON ({exc})"
    if not isinstance(parsed, dict):
        return None, f"its value is a JSON {type(parsed).__name__}, not an object"
    return {"key": key, "value": parsed, "version": number}, ""


def run_flushers(flushers: list[Flusher], stop: threading.Event) -> bool:
    """Run each flusher on a thread of its own until ``stop`` is set.

    Returns False when a thread ended otherwise (:meth:`Flusher.run` never raises, so
    only something like ``MemoryError`` or a bug gets there): it is logged with its
    traceback, ``stop`` is set so the others finish their round, and the caller should
    exit non-zero rather than live on with a shard nobody flushes.
    """
    died: list[str] = []

    def guarded(flusher: Flusher) -> None:
        try:
            flusher.run(stop)
        except BaseException:
            log.critical("flusher %s died; stopping the others", flusher.shard.name,
                         exc_info=True)
            died.append(flusher.shard.name)
        else:
            if not stop.is_set():
                log.critical("flusher %s ended while not asked to; stopping the others",
                             flusher.shard.name)
                died.append(flusher.shard.name)
        stop.set()

    threads = [threading.Thread(target=guarded, args=(f,), name=f"flush-{f.shard.name}")
               for f in flushers]
    for thread in threads:
        thread.start()
        log.info("flusher for shard %s started", thread.name.removeprefix("flush-"))
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)
    return not died


def quarantined(shard: Shard, *, limit: int = 50) -> dict[str, str]:
    """Up to ``limit`` of the records ``shard`` set aside: state key -> why PostgreSQL
    (or the flusher) refused it."""
    found: dict[str, str] = {}
    for key, reason in shard.client.hscan_iter(STATE_QUARANTINE, count=limit):
        if len(found) >= limit:
            break
        found[key.decode(errors="replace")] = reason.decode(errors="replace")
    return found


def quarantined_count(shard: Shard) -> int:
    """How many records ``shard`` set aside."""
    return int(shard.client.hlen(STATE_QUARANTINE))


def lag_samples(shard: Shard) -> list[float]:
    """Recent flush lags of ``shard`` in seconds, newest first."""
    return [int(v) / 1000 for v in shard.client.lrange(STATE_FLUSH_LAGS, 0, -1)]


def wait_until_clean(shards: list[Shard], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(s.dirty_count() == 0 for s in shards):
            return True
        time.sleep(0.05)
    return all(s.dirty_count() == 0 for s in shards)
