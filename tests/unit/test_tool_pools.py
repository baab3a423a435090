"""Tool threads: a bounded pool per tool; hung calls take only their own tool's slots."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from orchestrator.breakers import BreakerPolicy, Breakers
from orchestrator.errors import ToolDefinitionError, TransientStepError
from orchestrator.testing import MemoryBreakerStore
from orchestrator.tools import invoke
from orchestrator.tools.invoke import ToolInvoker
from orchestrator.tools.pools import ToolPool, ToolPools
from orchestrator.tools.registry import DEFAULT_TOOL_THREADS, ToolRegistry


class Counters(redis.Redis):
    """Just enough of a Redis client for telemetry's HINCRBY."""

    def __init__(self) -> None:
        self.counted: dict[str, int] = {}

    def hincrby(self, name: str, key: str, amount: int = 1) -> int:  # type: ignore[override]
        self.counted[key] = self.counted.get(key, 0) + amount
        return self.counted[key]


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown: whatever a test left hanging returns."""
    event = threading.Event()
    yield event
    event.set()


def test_calls_run_on_at_most_size_threads_and_queue_while_busy(
    release: threading.Event,
) -> None:
    pool = ToolPool("busy", 2)
    running = threading.Semaphore(0)

    def work(n: int) -> int:
        running.release()
        release.wait(5)
        return n

    futures = [pool.submit(work, n) for n in range(4)]
    assert running.acquire(timeout=2) and running.acquire(timeout=2)
    assert not running.acquire(timeout=0.2)  # the other two wait in line
    assert pool.threads == 2
    release.set()
    assert [f.result(timeout=2) for f in futures] == [0, 1, 2, 3]
    assert pool.threads == 2 and pool.hung == 0
    pool.shutdown()


def test_all_threads_hung_fails_fast_and_a_returning_call_frees_its_slot(
    release: threading.Event,
) -> None:
    pool = ToolPool("hangs", 2)
    started = threading.Semaphore(0)

    def hang() -> str:
        started.release()
        release.wait(10)
        return "late"

    calls = [pool.submit(hang) for _ in range(2)]
    assert started.acquire(timeout=2) and started.acquire(timeout=2)
    assert all(pool.abandon(f) for f in calls)
    assert pool.hung == 2
    began = time.monotonic()
    with pytest.raises(TransientStepError, match="all 2 of its threads are hung"):
        pool.submit(hang)
    assert time.monotonic() - began < 0.05
    release.set()
    assert all(f.result(timeout=2) == "late" for f in calls)
    assert pool.hung == 0
    assert pool.submit(lambda: "again").result(timeout=2) == "again"
    pool.shutdown()


def test_a_call_abandoned_before_it_started_is_dropped_not_hung(
    release: threading.Event,
) -> None:
    pool = ToolPool("one", 1)
    ran: list[str] = []
    first = pool.submit(lambda: release.wait(5))
    queued = pool.submit(lambda: ran.append("queued"))
    assert pool.abandon(queued) is False and queued.cancelled()
    assert pool.hung == 0
    release.set()
    assert first.result(timeout=2) is True
    assert pool.submit(lambda: "next").result(timeout=2) == "next"
    assert ran == []
    pool.shutdown()


def test_pools_are_one_per_tool() -> None:
    pools = ToolPools()
    assert pools.get("a", 3) is pools.get("a", 3)
    assert pools.get("b", 2) is not pools.get("a", 3)
    assert pools.get("a", 3).size == 3
    pools.shutdown()


@pytest.mark.parametrize("threads", [0, -1, 1025, 2.5, True])
def test_tool_with_an_unusable_thread_count_is_refused(threads: Any) -> None:
    with pytest.raises(ToolDefinitionError, match="threads must be a whole number"):
        ToolRegistry().declare("t", fn=lambda p: p, timeout=1.0, fallback={}, threads=threads)


def test_threads_default_to_the_tools_worker_concurrency() -> None:
    tool = ToolRegistry().declare("t", fn=lambda p: p, timeout=1.0, fallback={})
    assert tool.threads == DEFAULT_TOOL_THREADS == 16


def test_hung_tool_trips_its_own_breaker_and_leaves_its_neighbour_alone(
    monkeypatch: pytest.MonkeyPatch, release: threading.Event,
) -> None:
    registry = ToolRegistry()
    policy = BreakerPolicy(window=40, min_calls=40, threshold=0.5)
    registry.declare("hang", fn=lambda p: release.wait(30), timeout=0.05, threads=2,
                     fallback={"degraded": True}, breaker=policy)
    registry.declare("healthy", fn=lambda p: {"twice": p["q"] * 2}, timeout=0.5,
                     fallback={"degraded": True}, breaker=policy)
    monkeypatch.setattr(invoke, "tools", registry)
    breakers = Breakers(MemoryBreakerStore(), lambda: "w1")
    counters = Counters()
    pools = ToolPools()
    with httpx.Client() as http:
        tools = ToolInvoker(breakers=breakers, http=http, endpoint="http://127.0.0.1:9",
                            pools=pools, telemetry=counters)
        failed = 0
        for _ in range(40):
            try:
                tools.invoke("hang", {"q": 1}, last_attempt=False)
            except TransientStepError:
                failed += 1
        assert failed == 40
        assert breakers.get("hang").status().state == "open"
        assert pools.hung() == {"hang": 2}
        assert counters.counted["tool_hung_threads:hang"] == 2
        for q in range(50):
            began = time.monotonic()
            outcome = tools.invoke("healthy", {"q": q}, last_attempt=False)
            assert outcome.output == {"twice": 2 * q} and not outcome.fallback
            assert time.monotonic() - began < 0.1
        assert breakers.get("healthy").status().failures == 0
    release.set()
    pools.shutdown()
