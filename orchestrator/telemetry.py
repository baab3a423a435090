"""Recording fleet-wide counters and latency samples in Redis, cheaply.

Counters are one HINCRBY; samples are kept for one call in ``SAMPLE_EVERY`` (a random
draw), and a hot path's samples are buffered in the process (:class:`SampleBuffer`)
and pushed together, so the hot paths pay almost nothing. The exporter
(:mod:`orchestrator.metrics`) reads them at scrape time; :func:`percentile` summarizes
samples for it, the CLI and the benchmarks alike.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import random
import threading
import weakref

import redis

from orchestrator.constants import METRIC_COUNTERS, METRIC_SAMPLES, METRIC_SAMPLES_KEPT

log = logging.getLogger(__name__)
SAMPLE_EVERY = 10
# A buffer pushes its samples at this many, or this long after the first one waiting.
BUFFER_PUSH_AT = 64
BUFFER_PUSH_SECONDS = 1.0


def count(client: redis.Redis, name: str, amount: int = 1) -> None:
    """Add ``amount`` to the fleet counter ``name``; a Redis error is logged, not raised."""
    try:
        client.hincrby(METRIC_COUNTERS, name, amount)
    except redis.RedisError as exc:
        log.debug("metric %s not counted: %s", name, exc)


def counters(client: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(METRIC_COUNTERS).items()}


def samples(client: redis.Redis, name: str) -> list[float]:
    return [float(v) for v in client.lrange(METRIC_SAMPLES.format(name=name), 0, -1)]


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values`` by nearest rank; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class SampleBuffer:
    """Latency samples of a hot path, kept in this process and pushed to Redis together:
    one round trip per ``push_at`` samples, or ``push_seconds`` after the first one
    waiting (a timer thread pushes what an idle process holds; a normal exit pushes
    too). Without it every sampled call waits on a round trip of its own: about a tenth
    of a state update's cost at ``SAMPLE_EVERY`` 10. Thread-safe; a forked child starts
    with an empty buffer (what the parent held is the parent's to push). A push Redis
    refuses drops those samples, logged at debug level."""

    def __init__(self, client: redis.Redis, *, every: int = SAMPLE_EVERY,
                 push_at: int = BUFFER_PUSH_AT,
                 push_seconds: float = BUFFER_PUSH_SECONDS) -> None:
        self.client = client
        self.every = every
        self.push_at = push_at
        self.push_seconds = push_seconds
        self._forget()
        # Weakly: a buffer whose process moved on to other settings is not kept alive.
        ref = weakref.ref(self)
        atexit.register(_push_alive, ref)  # a process ending normally sends what it holds
        os.register_at_fork(after_in_child=lambda: _forget_alive(ref))

    def _forget(self) -> None:
        """Start empty, with a new lock: at creation, and in a forked child (the lock
        may have been held by a parent's thread at the fork, and the parent's samples
        and timer are the parent's)."""
        self._lock = threading.Lock()
        self._pending: dict[str, list[str]] = {}
        self._count = 0
        self._timer: threading.Timer | None = None

    def add(self, name: str, seconds: float) -> None:
        """Keep ``seconds`` as a sample of ``name``, one call in ``every``."""
        if self.every > 1 and random.randrange(self.every) != 0:
            return
        with self._lock:
            self._pending.setdefault(name, []).append(f"{seconds:.6f}")
            self._count += 1
            full = self._count >= self.push_at
            if not full and self._timer is None:
                self._timer = threading.Timer(self.push_seconds, self.push)
                self._timer.daemon = True
                self._timer.start()
        if full:
            self.push()

    def push(self) -> None:
        """Send what is waiting now (one pipeline)."""
        with self._lock:
            pending, self._pending, self._count = self._pending, {}, 0
            timer, self._timer = self._timer, None
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()
        if not pending:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for name, values in pending.items():
                key = METRIC_SAMPLES.format(name=name)
                pipe.lpush(key, *values)
                pipe.ltrim(key, 0, METRIC_SAMPLES_KEPT - 1)
            pipe.execute()
        except redis.RedisError as exc:
            log.debug("%d metric sample(s) not kept: %s",
                      sum(len(v) for v in pending.values()), exc)


def _push_alive(ref: weakref.ref[SampleBuffer]) -> None:
    if (buffer := ref()) is not None:
        buffer.push()


def _forget_alive(ref: weakref.ref[SampleBuffer]) -> None:
    if (buffer := ref()) is not None:
        buffer._forget()
