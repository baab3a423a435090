"""The gateway reads the provider's rate-limit headers and follows them."""

from __future__ import annotations

import pytest

from orchestrator.errors import TransientStepError
from orchestrator.llm.gateway import Gateway, parse_reset
from orchestrator.llm.keys import ApiKey, Provider
from orchestrator.testing import ManualClock, MemoryLimiter

KEY = ApiKey("sk-only", rpm=100, tpm=10_000, concurrency=5)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1s", 1.0), ("0.5s", 0.5), ("250ms", 0.25), ("6m0s", 360.0), ("1m30.5s", 90.5),
     ("1h2m3s", 3723.0), ("2", 2.0), (" 20ms ", 0.02)],
)
def test_reset_durations_are_read_in_seconds(value: str, seconds: float) -> None:
    assert parse_reset(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [None, "", "soon", "5 minutes", "ms"])
def test_unreadable_reset_is_none(value: str | None) -> None:
    assert parse_reset(value) is None


def _limiter() -> tuple[MemoryLimiter, ManualClock]:
    clock = ManualClock()
    provider = Provider("primary", "http://llm.example/v1", "m", (KEY,))
    return MemoryLimiter(provider, lease_seconds=65, clock=clock), clock


def _admitted(limiter: MemoryLimiter) -> bool:
    try:
        limiter.release(limiter.acquire(10, max_wait=0), 10)
    except TransientStepError:
        return False
    return True


@pytest.mark.parametrize("kind", ["requests", "tokens"])
def test_exhausted_budget_cools_the_key_until_the_reset(kind: str) -> None:
    limiter, clock = _limiter()
    lease = limiter.acquire(10, max_wait=0)
    limiter.release(lease, 10)
    Gateway._follow_headers(limiter, lease, {f"x-ratelimit-remaining-{kind}": "0",
                                             f"x-ratelimit-reset-{kind}": "2s"})
    assert not _admitted(limiter)
    clock.advance(1.9)
    assert not _admitted(limiter)
    clock.advance(0.2)
    assert _admitted(limiter)


@pytest.mark.parametrize(
    "headers",
    [{"x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "2s"},
     {"x-ratelimit-remaining-tokens": "n/a", "x-ratelimit-reset-tokens": "2s"},
     {"x-ratelimit-remaining-requests": "0"},
     {}],
)
def test_headers_with_budget_left_or_no_reset_change_nothing(headers: dict[str, str]) -> None:
    limiter, _ = _limiter()
    lease = limiter.acquire(10, max_wait=0)
    limiter.release(lease, 10)
    Gateway._follow_headers(limiter, lease, headers)
    assert _admitted(limiter)
