"""Backpressure: a deep queue refuses new work with a retry-after from the drain rate."""

from __future__ import annotations

import pytest
import redis
from sqlalchemy import text

import orchestrator
from config import Settings
from orchestrator import runtime
from orchestrator.constants import DRAINED
from orchestrator.errors import Backpressure


def _rows() -> int:
    with runtime.current().engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM invocations")).scalar_one())


def test_deep_queue_refuses_with_retry_after_from_drain_rate(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url or "")
    for i in range(30):  # no worker runs: the queue only grows
        orchestrator.submit("pipeline-5", {"n": i})
    orchestrator.configure(settings.model_copy(update={"max_queue_depths": {"agents": 20}}))
    # 5 steps/s drained, as the step runner would have counted them; a few seconds more
    # than the 10 s window, so a second ticking over before the check changes nothing.
    now = int(client.time()[0])
    for second in range(1, 14):
        client.set(f"{DRAINED.format(queue='agents')}{now - second}", 5, ex=60)
    depth = int(client.llen("agents"))
    rows = _rows()
    with pytest.raises(Backpressure) as caught:
        orchestrator.submit("pipeline-5", {"n": 99})
    assert "queue 'agents' holds" in str(caught.value)
    assert caught.value.retry_after == pytest.approx((depth - 20) / 5.0, abs=0.2)
    assert client.llen("agents") == depth  # nothing enqueued
    assert _rows() == rows  # nothing written


def test_stalled_queue_says_no_worker_drains_it(settings: Settings) -> None:
    for i in range(4):
        orchestrator.submit("pipeline-5", {"n": i})
    orchestrator.configure(settings.model_copy(update={"max_queue_depths": {"agents": 3}}))
    with pytest.raises(Backpressure, match="are its workers running") as caught:
        orchestrator.submit("pipeline-5", {"n": 5})
    assert caught.value.retry_after == 600.0
