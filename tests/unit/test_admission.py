"""Backpressure's retry-after: how long a refused producer is told to wait."""

from __future__ import annotations

import pytest

from orchestrator.execution.admission import MAX_RETRY_AFTER, MIN_RETRY_AFTER, QueueLoad


def test_queue_over_its_threshold_is_over_and_at_it_is_not() -> None:
    assert QueueLoad("llm", depth=101, limit=100, drain_rate=5.0).over
    assert not QueueLoad("llm", depth=100, limit=100, drain_rate=5.0).over


def test_retry_after_is_the_time_to_drain_the_excess_at_the_measured_rate() -> None:
    load = QueueLoad("llm", depth=1_300, limit=1_000, drain_rate=50.0)
    assert load.retry_after() == pytest.approx(6.0)


def test_queue_that_drains_nothing_asks_for_the_longest_wait() -> None:
    assert QueueLoad("tools", depth=20, limit=10, drain_rate=0.0).retry_after() == MAX_RETRY_AFTER


@pytest.mark.parametrize(
    ("depth", "rate", "expected"),
    [(1_001, 1_000.0, MIN_RETRY_AFTER),    # a moment's excess: still a pause worth taking
     (1_000_000, 1.0, MAX_RETRY_AFTER)],   # a huge backlog: never told to wait for hours
)
def test_retry_after_is_kept_within_its_bounds(depth: int, rate: float, expected: float) -> None:
    assert QueueLoad("agents", depth=depth, limit=1_000, drain_rate=rate).retry_after() == expected
