"""The flusher: persists a shard's dirty records to PostgreSQL, losing none.

Each round reads up to ``batch`` of the oldest dirty records, writes them in one
version-guarded statement (a newer version in PostgreSQL is never overwritten by an
older one, whatever the order of flushes) and then marks clean only the records still at
the flushed version. A flusher killed mid-round leaves its records dirty: the next round,
of this flusher or another, writes them again, harmlessly. One flusher per shard is
active at a time (a lease), so more can run for availability.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError

from orchestrator.constants import (
    STATE_CLEAN_TTL_SECONDS,
    STATE_DIRTY,
    STATE_FLUSH_LAGS,
    STATE_FLUSHER_LEASE,
    STATE_RECORD,
)
from orchestrator.state.writeback import Shard
from orchestrator.store.state_rows import StateRows

log = logging.getLogger(__name__)
LAG_SAMPLES = 10_000

@dataclass(frozen=True)
class RoundResult:
    read: int
    cleaned: int


class Flusher:
    """Drains one shard's dirty index into PostgreSQL."""

    def __init__(self, shard: Shard, rows: StateRows, *, owner: str, batch: int = 500,
                 interval: float = 0.05, lease_seconds: float = 10.0,
                 pace: float = 0.0) -> None:
        self.shard = shard
        self.rows = rows
        self.owner = owner
        self.batch = batch
        self.interval = interval
        self.pace = pace
        self.lease_ms = int(lease_seconds * 1000)
        self.prefix_len = len(STATE_RECORD.format(key=""))

    def flush_once(self) -> RoundResult:
        """One round; raises ``SQLAlchemyError`` when PostgreSQL is unreachable."""
        client = self.shard.client
        seconds, micros = client.time()
        read_at_ms = int(seconds) * 1000 + int(micros) // 1000
        record_keys = [k.decode() for k in client.zrange(STATE_DIRTY, 0, self.batch - 1)]
        if not record_keys:
            return RoundResult(0, 0)
        pipe = client.pipeline(transaction=False)
        for record_key in record_keys:
            pipe.hmget(record_key, "v", "ver")
        values = pipe.execute()
        rows, flushed_keys, versions = [], [], []
        for record_key, (value, version) in zip(record_keys, values, strict=True):
            if version is None or not value:
                client.zrem(STATE_DIRTY, record_key)  # nothing to persist
                continue
            rows.append({"key": record_key[self.prefix_len:], "value": json.loads(value),
                         "version": int(version)})
            flushed_keys.append(record_key)
            versions.append(int(version))
        if rows:
            self.rows.upsert_newer(rows)
        cleaned = int(self.shard.clean(
            keys=[STATE_DIRTY, STATE_FLUSH_LAGS, *flushed_keys],
            args=[STATE_CLEAN_TTL_SECONDS, LAG_SAMPLES, read_at_ms, *versions],
        )) if flushed_keys else 0
        return RoundResult(len(record_keys), cleaned)

    def _hold_lease(self) -> bool:
        client = self.shard.client
        if client.set(STATE_FLUSHER_LEASE, self.owner, nx=True, px=self.lease_ms):
            return True
        if client.get(STATE_FLUSHER_LEASE) == self.owner.encode():
            client.pexpire(STATE_FLUSHER_LEASE, self.lease_ms)
            return True
        return False

    def run(self, stop: threading.Event) -> None:
        """Flush until ``stop`` is set; waits out PostgreSQL outages with backoff."""
        backoff = self.interval
        while not stop.is_set():
            if not self._hold_lease():
                stop.wait(self.lease_ms / 4000)
                continue
            try:
                result = self.flush_once()
                backoff = self.interval
            except SQLAlchemyError as exc:
                log.warning("flusher %s: PostgreSQL unavailable (%s); %d records wait",
                            self.shard.name, type(exc).__name__, self.shard.dirty_count())
                backoff = min(backoff * 2, 2.0)
                stop.wait(backoff)
                continue
            if result.read < self.batch:
                stop.wait(self.interval)
            elif self.pace:
                stop.wait(self.pace)
        if self.shard.client.get(STATE_FLUSHER_LEASE) == self.owner.encode():
            self.shard.client.delete(STATE_FLUSHER_LEASE)


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
