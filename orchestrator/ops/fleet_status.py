"""What the fleet is doing right now: queues (depth, paused, parked, consumers), workers
online, invocations by status."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.ops.queues import QueueControl, QueueState
from orchestrator.subsystems import Subsystems


@dataclass(frozen=True)
class FleetStatus:
    queues: list[QueueState]  # depth, pause, parked messages, consumers
    workers: list[str]  # node names that answered a ping
    invocations: dict[str, int]  # per status

    def as_json(self) -> dict[str, object]:
        return {"queues": {q.queue: q.as_json() for q in self.queues},
                "workers": self.workers, "invocations": self.invocations}


def fleet_status(sub: Subsystems, *, ping_timeout: float = 1.0) -> FleetStatus:
    """Queues (Redis; consumers as the workers report them), live workers (a Celery
    ping) and invocations by status."""
    rt = sub.runtime
    queues = QueueControl(rt.redis, rt.producer, inspect_timeout=ping_timeout).states()
    replies = rt.producer.control.ping(timeout=ping_timeout) or []
    workers = sorted(name for reply in replies for name in reply)
    return FleetStatus(queues, workers, sub.store.counts())
