"""Admission control: refuse new work while a queue is deeper than its threshold.

The retry-after a refused producer gets is the time the queue needs, at the drain rate
measured over the last ten seconds, to come back under its threshold.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import redis

from config import Settings
from orchestrator.constants import DRAINED
from orchestrator.errors import Backpressure

RATE_WINDOW = 10
DEPTH_CACHE_SECONDS = 0.5
MAX_RETRY_AFTER = 600.0
MIN_RETRY_AFTER = 0.5


@dataclass(frozen=True)
class QueueLoad:
    queue: str
    depth: int
    limit: int
    drain_rate: float  # steps finished per second, last RATE_WINDOW seconds

    @property
    def over(self) -> bool:
        return self.depth > self.limit

    def retry_after(self) -> float:
        """Seconds until the queue is back under its threshold at the measured rate."""
        if self.drain_rate <= 0:
            return MAX_RETRY_AFTER
        excess = self.depth - self.limit
        return max(MIN_RETRY_AFTER, min(MAX_RETRY_AFTER, excess / self.drain_rate))


def drain_rate(client: redis.Redis, queue: str) -> float:
    """Steps finished per second on ``queue`` over the last ``RATE_WINDOW`` full seconds."""
    now = int(client.time()[0])
    prefix = DRAINED.format(queue=queue)
    counts = client.mget([f"{prefix}{now - i}" for i in range(1, RATE_WINDOW + 1)])
    return sum(int(c) for c in counts if c) / RATE_WINDOW


def queue_load(client: redis.Redis, settings: Settings, queue: str) -> QueueLoad:
    depth = int(client.llen(queue))
    limit = settings.queue_depth_limit(queue)
    rate = drain_rate(client, queue) if depth > limit else 0.0
    return QueueLoad(queue, depth, limit, rate)


class Admission:
    """Checks a producer's queues; depths are sampled at most every half second."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self._cache: dict[str, tuple[float, QueueLoad]] = {}
        self._lock = threading.Lock()

    def load(self, queue: str) -> QueueLoad:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(queue)
            if cached and now - cached[0] < DEPTH_CACHE_SECONDS:
                return cached[1]
        load = queue_load(self.client, self.settings, queue)
        with self._lock:
            self._cache[queue] = (now, load)
        return load

    def check(self, queues: set[str]) -> None:
        """Raise ``Backpressure`` if any of ``queues`` is over its threshold."""
        for queue in sorted(queues):
            load = self.load(queue)
            if load.over:
                if load.drain_rate > 0:
                    why = f"draining at {load.drain_rate:.1f} steps/s"
                else:
                    why = "nothing drained in the last 10 s: are its workers running?"
                raise Backpressure(
                    f"queue {queue!r} holds {load.depth} messages, over its threshold of "
                    f"{load.limit} ({why})",
                    retry_after=round(load.retry_after(), 1),
                )
