"""Rate-limit headers of every dialect (OpenAI, Anthropic, gateways' per-scope names) are
read as budgets, and a coarse retry-after is an upper bound: one call probes earlier."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import cast

import httpx
import pytest
import redis
from pydantic import SecretStr

from config import Settings
from orchestrator.breakers import Breakers
from orchestrator.errors import TransientStepError
from orchestrator.llm.client import ProviderFailure
from orchestrator.llm.gateway import Gateway, providers
from orchestrator.llm.keys import ApiKey, Provider
from orchestrator.llm.limiter import RedisLimiter
from orchestrator.llm.ratelimit_headers import Budget, exhausted_reset, parse_reset, read_budgets
from orchestrator.testing import ManualClock, MemoryBreakerStore, MemoryLimiter

NOW = 1_800_000_000.0


def _rfc3339(seconds_from_now: float) -> str:
    return (datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=seconds_from_now)).isoformat()


def test_openai_headers_are_read_with_duration_resets() -> None:
    budgets = read_budgets({"x-ratelimit-remaining-requests": "0",
                            "x-ratelimit-reset-requests": "1m0.5s",
                            "x-ratelimit-remaining-tokens": "900",
                            "x-ratelimit-reset-tokens": "250ms",
                            "x-ratelimit-limit-requests": "200"}, now=NOW)
    assert budgets == [Budget("openai", "requests", 0, 60.5),
                       Budget("openai", "tokens", 900, 0.25)]


def test_anthropic_headers_are_read_with_rfc3339_resets() -> None:
    budgets = read_budgets({"anthropic-ratelimit-requests-remaining": "0",
                            "anthropic-ratelimit-requests-reset": _rfc3339(12.5),
                            "anthropic-ratelimit-input-tokens-remaining": "40",
                            "anthropic-ratelimit-input-tokens-reset": "2030-01-01T00:00:00Z",
                            "anthropic-ratelimit-requests-limit": "50"}, now=NOW)
    assert (budgets[0].scope, budgets[0].kind, budgets[0].remaining) == (
        "anthropic", "requests", 0)
    assert budgets[0].reset == pytest.approx(12.5)
    assert budgets[1].kind == "tokens" and budgets[1].remaining == 40
    assert exhausted_reset({"anthropic-ratelimit-tokens-remaining": "0",
                            "anthropic-ratelimit-tokens-reset": _rfc3339(3)},
                           now=NOW) == pytest.approx(3)


@pytest.mark.parametrize("scope", ["key", "minute", "org-tier", "project_a"])
def test_gateway_per_scope_names_are_read(scope: str) -> None:
    budgets = read_budgets({f"X-RateLimit-{scope}-Remaining-Requests": "0",
                            f"x-ratelimit-{scope}-reset-requests": "0.8",
                            f"x-ratelimit-{scope}-remaining-tokens": "12",
                            f"x-ratelimit-{scope}-limit-tokens": "1000"}, now=NOW)
    assert budgets == [Budget(scope, "requests", 0, 0.8), Budget(scope, "tokens", 12, None)]


def test_budget_at_zero_without_a_reset_says_nothing_of_when() -> None:
    assert exhausted_reset({"x-ratelimit-key-remaining-requests": "0"}) is None
    assert exhausted_reset({"x-ratelimit-remaining-requests": "3",
                            "x-ratelimit-reset-requests": "9s"}) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("250ms", 0.25), ("7", 7.0), (str(NOW + 4), 4.0),
     (str(NOW - 4), 0.0), (_rfc3339(30), 30.0), (_rfc3339(-5), 0.0)],
)
def test_resets_are_durations_seconds_epochs_or_times(value: str, seconds: float) -> None:
    assert parse_reset(value, now=NOW) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["2026-01-01T00:00:00", "tomorrow", "-"])
def test_unreadable_or_zoneless_resets_are_none(value: str) -> None:
    assert parse_reset(value, now=NOW) is None


def _gateway(probe_after: float = 1.0) -> tuple[Gateway, MemoryLimiter, ManualClock]:
    clock = ManualClock()
    settings = Settings(llm_base_url="http://gw.test/v1",
                        llm_api_keys=[SecretStr("sk-only")], llm_max_wait=1.0)
    (provider,) = providers(settings)
    limiter = MemoryLimiter(provider, lease_seconds=65, clock=clock)

    class _Counters:
        def hincrby(self, *_args: object) -> None: ...

    gateway = Gateway(settings, cast(redis.Redis, _Counters()),
                      httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500))),
                      Breakers(MemoryBreakerStore(clock), lambda: "worker-1"),
                      limiters={"primary": limiter}, probe_after=probe_after)
    return gateway, limiter, clock


def _too_many(headers: dict[str, str], retry_after: float | None = 60.0) -> ProviderFailure:
    return ProviderFailure(429, "HTTP 429: rate limited", retry_after, headers)


def _admitted(limiter: MemoryLimiter, tokens: int | None = 10) -> bool:
    try:
        limiter.release(limiter.acquire(10, max_wait=0), tokens)
    except TransientStepError:
        return False
    return True


def test_coarse_retry_after_cools_the_key_only_until_one_call_probes() -> None:
    gateway, limiter, clock = _gateway()
    key = limiter.provider.keys[0]
    pause = gateway._rate_limited(limiter, key, _too_many(
        {"x-ratelimit-key-remaining-requests": "0"}))
    assert pause == pytest.approx(1.0)
    clock.advance(0.99)
    assert not _admitted(limiter)
    clock.advance(0.01)
    probe = limiter.acquire(10, max_wait=0)  # one call probes the provider's window...
    with pytest.raises(TransientStepError):
        limiter.acquire(10, max_wait=0)  # ...and the line waits for its answer
    limiter.release(probe, 10)  # it answered: the window has room again
    assert all(_admitted(limiter) for _ in range(3))


def test_probe_that_gets_a_429_again_waits_twice_as_long_never_past_the_retry_after() -> None:
    gateway, limiter, _ = _gateway(probe_after=0.01)
    key = limiter.provider.keys[0]
    pauses = []
    for _ in range(4):
        pauses.append(gateway._rate_limited(limiter, key, _too_many({}, retry_after=0.05)))
        time.sleep(pauses[-1] + 0.005)  # a later 429 is the probe's, not an in-flight call's
    assert pauses == pytest.approx([0.01, 0.02, 0.04, 0.05], abs=0.004)


def test_429s_of_calls_already_in_flight_are_one_incident() -> None:
    gateway, limiter, _ = _gateway()
    key = limiter.provider.keys[0]
    pauses = [gateway._rate_limited(limiter, key, _too_many({})) for _ in range(5)]
    assert max(pauses) <= 1.0


def test_probe_that_fails_otherwise_leaves_the_next_call_to_probe() -> None:
    gateway, limiter, clock = _gateway()
    key = limiter.provider.keys[0]
    gateway._rate_limited(limiter, key, _too_many({}))
    clock.advance(1.0)
    assert _admitted(limiter, tokens=None)  # a 5xx: no verdict on the window
    probe = limiter.acquire(10, max_wait=0)
    with pytest.raises(TransientStepError):
        limiter.acquire(10, max_wait=0)
    limiter.release(probe, 10)
    assert _admitted(limiter)


def test_after_the_retry_after_the_key_is_free_whatever_the_probes() -> None:
    gateway, limiter, clock = _gateway()
    key = limiter.provider.keys[0]
    gateway._rate_limited(limiter, key, _too_many({}))
    clock.advance(1.0)
    limiter.acquire(10, max_wait=0)  # a probe that never answers
    clock.advance(59.0)
    assert _admitted(limiter) and _admitted(limiter)


def _in(seconds: float) -> str:
    """An RFC 3339 time ``seconds`` from now, as Anthropic states its resets."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


@pytest.mark.parametrize("headers", [
    {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2.5s"},
    {"anthropic-ratelimit-requests-remaining": "0", "anthropic-ratelimit-requests-reset": "IN"},
    {"x-ratelimit-minute-remaining-requests": "0", "x-ratelimit-minute-reset-requests": "2.5"},
])
def test_a_reset_header_is_finer_than_the_retry_after(headers: dict[str, str]) -> None:
    headers = {k: _in(2.5) if v == "IN" else v for k, v in headers.items()}
    gateway, limiter, clock = _gateway()
    pause = gateway._rate_limited(limiter, limiter.provider.keys[0], _too_many(headers))
    assert pause == pytest.approx(2.5, abs=0.1)
    clock.advance(pause - 0.05)
    assert not _admitted(limiter)
    clock.advance(0.1)
    assert _admitted(limiter) and _admitted(limiter)


@pytest.mark.parametrize("headers", [
    {"anthropic-ratelimit-tokens-remaining": "0", "anthropic-ratelimit-tokens-reset": "IN"},
    {"x-ratelimit-key-remaining-requests": "0", "x-ratelimit-key-reset-requests": "2s"},
])
def test_exhausted_budget_of_any_dialect_cools_the_key_after_a_success(
    headers: dict[str, str],
) -> None:
    headers = {k: _in(2.0) if v == "IN" else v for k, v in headers.items()}
    _, limiter, clock = _gateway()
    lease = limiter.acquire(10, max_wait=0)
    limiter.release(lease, 10)
    Gateway._follow_headers(limiter, lease, headers)
    assert not _admitted(limiter)
    clock.advance(2.1)
    assert _admitted(limiter)


def test_call_counts_in_the_minute_from_its_completion_plus_the_margin() -> None:
    clock = ManualClock()
    provider = Provider("p", "http://x/v1", "m", (ApiKey("sk", rpm=1, tpm=1000,
                                                        concurrency=1),))
    limiter = MemoryLimiter(provider, lease_seconds=65, clock=clock, window_margin=0.5)
    lease = limiter.acquire(10, max_wait=0)
    clock.advance(2.0)  # the provider may count it when it answers
    limiter.release(lease, 10)
    clock.advance(60.4)
    assert not _admitted(limiter)
    clock.advance(0.1)
    assert _admitted(limiter)


def test_gateway_takes_its_margin_and_probe_pause_from_the_settings() -> None:
    settings = Settings(llm_base_url="http://gw.test/v1", llm_api_keys=[SecretStr("sk-only")],
                        llm_window_margin=1.25, llm_probe_after=2.5)
    client = redis.Redis()  # the limiter registers its scripts: no connection until used
    gateway = Gateway(settings, client, httpx.Client(),
                      Breakers(MemoryBreakerStore(ManualClock()), lambda: "worker-1"))
    limiter = gateway.limiters["primary"]
    assert isinstance(limiter, RedisLimiter)
    assert limiter.window_ms == 61_250
    assert gateway.probe_after == 2.5
