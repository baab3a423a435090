"""The gateway and the fleet's limiter (Redis) against a provider like many gateways: fixed
one-minute windows on its own clock, ``retry-after: 60`` on every 429 whatever the real
reset, rate-limit headers of its own naming. A coarse retry-after is an upper bound: one
call probes the window soon after, so a key is back within seconds of the window's real
reset, not a minute later."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis
from pydantic import SecretStr

from config import Settings
from orchestrator.breakers import Breakers
from orchestrator.devstack.simulators.llm_provider import LLMSimConfig, create_app
from orchestrator.devstack.simulators.server import ServerHandle, start_server
from orchestrator.errors import TransientStepError
from orchestrator.llm.gateway import Gateway
from orchestrator.testing import MemoryBreakerStore

KEY = "sk-gateway-1"
MESSAGES = [{"role": "user", "content": "hello"}]


def _coarse_gateway(rpm: int, boundary_in: float) -> ServerHandle:
    return start_server(create_app(LLMSimConfig(
        keys=(KEY,), rpm=rpm, concurrency=10, latency=0.01, jitter=0.0, window="fixed",
        window_phase=(time.time() + boundary_in) % 60, retry_after=60,
        header_style="gateway", header_scope="key")))


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    found = redis.Redis.from_url(redis_url)
    yield found
    found.close()


def _gateway(client: redis.Redis, url: str, *, rpm: int) -> Gateway:
    settings = Settings(llm_base_url=f"{url}/v1", llm_api_keys=[SecretStr(KEY)], llm_rpm=rpm,
                        llm_tpm=1_000_000, llm_concurrency=10, llm_max_wait=30.0,
                        llm_retry_budget=8)
    return Gateway(settings, client, httpx.Client(), Breakers(MemoryBreakerStore(),
                                                              lambda: "worker-1"))


def _stats(url: str) -> dict[str, int]:
    return httpx.get(f"{url}/stats", timeout=5).json()["keys"]["0"]


def test_coarse_retry_after_is_probed_early_and_the_call_lands_after_the_real_reset(
    client: redis.Redis,
) -> None:
    # Our limits say 100/min, the gateway's window holds 3 and frees 2 s from now.
    with _coarse_gateway(rpm=3, boundary_in=2.0) as provider:
        gateway = _gateway(client, provider.url, rpm=100)
        for _ in range(3):
            gateway.complete(MESSAGES, max_tokens=10)
        started = time.monotonic()
        done = gateway.complete(MESSAGES, max_tokens=10)  # 429 (retry-after 60), probes
        took = time.monotonic() - started
        stats = _stats(provider.url)
    assert done.attempts > 1
    assert took < 8.0  # not the 60 s the gateway asked for
    assert stats["succeeded"] == 4
    assert 1 <= stats["429_rpm"] <= 3  # one probe at a time, doubling: 1 s, 2 s, ...


def test_calls_waiting_behind_a_probe_do_not_storm_the_gateway(client: redis.Redis) -> None:
    with _coarse_gateway(rpm=2, boundary_in=2.5) as provider:
        gateway = _gateway(client, provider.url, rpm=100)
        for _ in range(2):
            gateway.complete(MESSAGES, max_tokens=10)
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(
                lambda _: gateway.complete(MESSAGES, max_tokens=10).result.content,
                range(2)))
        stats = _stats(provider.url)
    assert all(results)
    assert stats["succeeded"] == 4
    # Both calls met the full window at most once each before probing began, then one
    # probe at a time until the boundary: a handful of 429s, not one per waiter per second.
    assert stats["429_rpm"] <= 5


def test_a_limiter_that_knows_the_limit_sends_no_call_over_it(
    client: redis.Redis,
) -> None:
    # Our limits match the gateway's: the limiter holds the 5th call (the minute is full
    # in its own count), so the gateway never has to refuse one.
    with _coarse_gateway(rpm=4, boundary_in=0.3) as provider:
        gateway = _gateway(client, provider.url, rpm=4)
        for _ in range(4):
            gateway.complete(MESSAGES, max_tokens=10)
        assert gateway.limiters["primary"].statuses()[0].requests_left == 0
        with pytest.raises(TransientStepError):
            gateway.limiters["primary"].acquire(10, max_wait=0.2)
        stats = _stats(provider.url)
    assert stats["succeeded"] == 4 and stats["rate_limited_429"] == 0
