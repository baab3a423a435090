"""What the fleet is doing right now: queue depths, workers online, invocations by status."""

from __future__ import annotations

from dataclasses import dataclass

from config.celery import QUEUES
from orchestrator.subsystems import Subsystems


@dataclass(frozen=True)
class FleetStatus:
    queues: dict[str, int]  # messages waiting, per queue
    workers: list[str]  # node names that answered a ping
    invocations: dict[str, int]  # per status

    def as_json(self) -> dict[str, object]:
        return {"queues": self.queues, "workers": self.workers,
                "invocations": self.invocations}


def fleet_status(sub: Subsystems, *, ping_timeout: float = 1.0) -> FleetStatus:
    """Queue depths (Redis), live workers (a Celery ping) and invocations by status."""
    rt = sub.runtime
    depths = {queue: int(rt.redis.llen(queue)) for queue in QUEUES}
    replies = rt.producer.control.ping(timeout=ping_timeout) or []
    workers = sorted(name for reply in replies for name in reply)
    return FleetStatus(depths, workers, sub.store.counts())
