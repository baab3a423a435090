"""What the fleet is doing right now: queues (depth, paused, parked, consumers), workers
online, invocations by status, state records the flusher set aside."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.ops.queues import QueueControl, QueueState
from orchestrator.state.flusher import quarantined, quarantined_count
from orchestrator.subsystems import Subsystems


@dataclass(frozen=True)
class Quarantine:
    """A shard's write-back records PostgreSQL refused: kept in Redis, not flushed."""

    count: int
    records: dict[str, str]  # state key -> reason, at most 50 of them

    def as_json(self) -> dict[str, object]:
        return {"count": self.count, "records": self.records}


@dataclass(frozen=True)
class FleetStatus:
    queues: list[QueueState]  # depth, pause, parked messages, consumers
    workers: list[str]  # node names that answered a ping
    invocations: dict[str, int]  # per status
    state_quarantine: dict[str, Quarantine] = field(default_factory=dict)  # per shard

    def as_json(self) -> dict[str, object]:
        return {"queues": {q.queue: q.as_json() for q in self.queues},
                "workers": self.workers, "invocations": self.invocations,
                "state_quarantine": {shard: q.as_json()
                                     for shard, q in self.state_quarantine.items()}}


def fleet_status(sub: Subsystems, *, ping_timeout: float = 1.0) -> FleetStatus:
    """Queues (Redis; consumers as the workers report them), live workers (a Celery
    ping), invocations by status and quarantined state records per memory-layer shard."""
    rt = sub.runtime
    queues = QueueControl(rt.redis, rt.producer, inspect_timeout=ping_timeout).states()
    replies = rt.producer.control.ping(timeout=ping_timeout) or []
    workers = sorted(name for reply in replies for name in reply)
    quarantine = {shard.name: Quarantine(quarantined_count(shard), quarantined(shard))
                  for shard in rt.state_shards}
    return FleetStatus(queues, workers, sub.store.counts(), quarantine)
