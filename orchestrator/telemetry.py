"""Recording fleet-wide counters and latency samples in Redis, cheaply.

Counters are one HINCRBY; samples are kept for one call in ``SAMPLE_EVERY`` (a random
draw), so the hot paths pay almost nothing. The exporter (:mod:`orchestrator.metrics`)
reads them at scrape time; :func:`percentile` summarizes samples for it, the CLI and the
benchmarks alike.
"""

from __future__ import annotations

import logging
import math
import random

import redis

from orchestrator.constants import METRIC_COUNTERS, METRIC_SAMPLES, METRIC_SAMPLES_KEPT

log = logging.getLogger(__name__)
SAMPLE_EVERY = 10


def count(client: redis.Redis, name: str, amount: int = 1) -> None:
    """Add ``amount`` to the fleet counter ``name``; a Redis error is logged, not raised."""
    try:
        client.hincrby(METRIC_COUNTERS, name, amount)
    except redis.RedisError as exc:
        log.debug("metric %s not counted: %s", name, exc)


def sample(client: redis.Redis, name: str, seconds: float, *, every: int = SAMPLE_EVERY) -> None:
    """Keep ``seconds`` as a sample of ``name``, one call in ``every``."""
    if every > 1 and random.randrange(every) != 0:
        return
    key = METRIC_SAMPLES.format(name=name)
    try:
        # One round trip: the sampled call's caller is waiting on it.
        pipe = client.pipeline(transaction=False)
        pipe.lpush(key, f"{seconds:.6f}")
        pipe.ltrim(key, 0, METRIC_SAMPLES_KEPT - 1)
        pipe.execute()
    except redis.RedisError as exc:
        log.debug("metric sample %s not kept: %s", name, exc)


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
