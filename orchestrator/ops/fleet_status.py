"""What the fleet is doing right now, on one screen: queues (depth, paused, parked,
consumers), workers online (the queues each consumes, pool and concurrency), invocations
by status over the last hour, stalled invocations, breakers, LLM keys, the memory layer
(unflushed records, flush lag, quarantined records) and dead letters."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.breakers import BreakerStatus, known_breakers
from orchestrator.llm.rotation import KeyStatus, key_statuses
from orchestrator.ops.dead_letters import cause_counts, dead_letters
from orchestrator.ops.queues import QueueControl, QueueState
from orchestrator.state.flusher import lag_samples, quarantined, quarantined_count
from orchestrator.subsystems import Subsystems
from orchestrator.telemetry import percentile

WINDOW_SECONDS = 3600  # "the last hour" of invocations and dead letters


@dataclass(frozen=True)
class Quarantine:
    """A shard's write-back records PostgreSQL refused: kept in Redis, not flushed."""

    count: int
    records: dict[str, str]  # state key -> reason, at most 50 of them

    def as_json(self) -> dict[str, object]:
        return {"count": self.count, "records": self.records}


@dataclass(frozen=True)
class Worker:
    name: str
    queues: list[str]
    pool: str
    concurrency: int | None

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "queues": self.queues, "pool": self.pool,
                "concurrency": self.concurrency}


@dataclass(frozen=True)
class Shard:
    """One memory-layer shard: records acknowledged but not yet in PostgreSQL."""

    dirty: int
    flush_lag_p99_s: float | None
    quarantine: Quarantine

    def as_json(self) -> dict[str, object]:
        return {"dirty": self.dirty, "flush_lag_p99_s": self.flush_lag_p99_s,
                "quarantine": self.quarantine.as_json()}


@dataclass(frozen=True)
class FleetStatus:
    queues: list[QueueState]  # depth, pause, parked messages, consumers
    workers: list[Worker]  # that answered
    invocations: dict[str, int]  # per status, all time
    last_hour: dict[str, int]  # per status, created in the last hour
    stalled: list[str]  # invocation ids the reconciler would act on now
    breakers: list[BreakerStatus] = field(default_factory=list)
    keys: list[KeyStatus] = field(default_factory=list)
    shards: dict[str, Shard] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)  # last hour, per cause

    @property
    def state_quarantine(self) -> dict[str, Quarantine]:
        return {name: shard.quarantine for name, shard in self.shards.items()}

    def as_json(self) -> dict[str, object]:
        return {
            "queues": {q.queue: q.as_json() for q in self.queues},
            "workers": [w.as_json() for w in self.workers],
            "invocations": self.invocations,
            "invocations_last_hour": self.last_hour,
            "stalled": self.stalled,
            "breakers": [{"name": b.name, "state": b.state, "forced": b.forced,
                          "error_rate": b.error_rate, "next_probe_in_s": b.next_probe_in}
                         for b in self.breakers],
            "llm_keys": [k.as_json() for k in self.keys],
            "state_shards": {name: s.as_json() for name, s in self.shards.items()},
            "state_quarantine": {name: q.as_json()
                                 for name, q in self.state_quarantine.items()},
            "dead_letters_last_hour": self.dead_letters,
        }


def _workers(sub: Subsystems, timeout: float) -> list[Worker]:
    inspect = sub.runtime.producer.control.inspect(timeout=timeout)
    queues: dict[str, Any] = inspect.active_queues() or {}
    stats: dict[str, Any] = inspect.stats() or {}
    found = []
    for name in sorted(set(queues) | set(stats)):
        pool = (stats.get(name) or {}).get("pool") or {}
        found.append(Worker(
            name, sorted(q["name"] for q in queues.get(name) or []),
            # "celery.concurrency.prefork:TaskPool" -> "prefork"
            str(pool.get("implementation", "?")).split(":", 1)[0].rsplit(".", 1)[-1],
            pool.get("max-concurrency")))
    return found


def fleet_status(sub: Subsystems, *, ping_timeout: float = 1.0) -> FleetStatus:
    """Everything ``orchestrator status`` shows (see the module docstring)."""
    rt = sub.runtime
    sub.load_workflows()
    queues = QueueControl(rt.redis, rt.producer, inspect_timeout=ping_timeout).states()
    shards = {}
    for shard in rt.state_shards:
        lags = lag_samples(shard)
        shards[shard.name] = Shard(shard.dirty_count(), percentile(lags, 99),
                                   Quarantine(quarantined_count(shard), quarantined(shard)))
    since = datetime.now(UTC) - timedelta(seconds=WINDOW_SECONDS)
    report = sub.reconciler().reconcile_once(act=False)
    return FleetStatus(
        queues=queues,
        workers=_workers(sub, ping_timeout),
        invocations=sub.store.counts(),
        last_hour=sub.store.counts_since(WINDOW_SECONDS),
        stalled=[*report.completed, *report.redispatched, *report.failed],
        breakers=[sub.breakers.get(name).status() for name in known_breakers(rt.redis)],
        keys=key_statuses(sub.llm.limiters.values()),
        shards=shards,
        dead_letters=cause_counts(dead_letters(sub, since=since)),
    )
