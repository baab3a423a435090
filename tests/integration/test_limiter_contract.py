"""The LLM limiter's rules, run on both limiters: Redis (the fleet's Lua) and the
in-memory one unit tests use, so the fake cannot drift from the Lua.

Time passes by the memory clock, or by waiting for Redis's (leases and cooldowns here are
short; the rolling minute of RPM/TPM is left to the unit tests).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis

from orchestrator.errors import StepFailed, TransientStepError
from orchestrator.llm.keys import ApiKey, Provider
from orchestrator.llm.limiter import Limiter, RedisLimiter
from orchestrator.testing import ManualClock, MemoryLimiter

LEASE_SECONDS = 0.4


@dataclass
class Backend:
    make: Callable[..., Limiter]
    wait: Callable[[float], None]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    def provider(*keys: ApiKey) -> Provider:
        return Provider("primary", "http://llm.example/v1", uuid.uuid4().hex[:8], keys)

    if request.param == "memory":
        clock = ManualClock()
        yield Backend(lambda *keys: MemoryLimiter(provider(*keys), lease_seconds=LEASE_SECONDS,
                                                  clock=clock), clock.advance)
        return
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        yield Backend(lambda *keys: RedisLimiter(client, provider(*keys),
                                                 lease_seconds=LEASE_SECONDS), time.sleep)
    finally:
        client.close()


def _key(name: str, *, rpm: int = 100, tpm: int = 10_000, concurrency: int = 10) -> ApiKey:
    return ApiKey(name, rpm=rpm, tpm=tpm, concurrency=concurrency)


def _refused(limiter: Limiter, tokens: int = 10) -> bool:
    try:
        limiter.release(limiter.acquire(tokens, max_wait=0), None)
    except TransientStepError:
        return True
    return False


def test_concurrency_is_held_per_key_until_release(backend: Backend) -> None:
    limiter = backend.make(_key("sk-a", concurrency=2))
    first = limiter.acquire(10, max_wait=0)
    limiter.acquire(10, max_wait=0)
    assert _refused(limiter)
    assert limiter.in_flight() == {first.key.id: 2}
    limiter.release(first, 10)
    assert not _refused(limiter)


def test_lease_never_released_expires(backend: Backend) -> None:
    limiter = backend.make(_key("sk-a", concurrency=1))
    limiter.acquire(10, max_wait=0)
    assert _refused(limiter)
    backend.wait(LEASE_SECONDS + 0.05)
    assert not _refused(limiter)


def test_requests_per_minute_are_counted_released_or_not(backend: Backend) -> None:
    limiter = backend.make(_key("sk-a", rpm=2))
    for _ in range(2):
        limiter.release(limiter.acquire(10, max_wait=0), 10)
    assert _refused(limiter)


def test_tokens_settle_to_the_reported_usage(backend: Backend) -> None:
    limiter = backend.make(_key("sk-a", tpm=1_000))
    limiter.release(limiter.acquire(600, max_wait=0), 100)
    assert not _refused(limiter, 800)
    assert _refused(limiter, 101)  # 100 + 800 (kept at its estimate) + 101 > 1000


def test_call_goes_to_the_key_with_the_most_headroom(backend: Backend) -> None:
    limiter = backend.make(_key("sk-a", concurrency=4), _key("sk-b", concurrency=4))
    secrets = sorted(limiter.acquire(10, max_wait=0).key.secret for _ in range(4))
    assert secrets == ["sk-a", "sk-a", "sk-b", "sk-b"]


def test_cooled_down_key_is_skipped_until_its_cooldown_ends(backend: Backend) -> None:
    cooled, other = _key("sk-a"), _key("sk-b", concurrency=1)
    limiter = backend.make(cooled, other)
    limiter.cool_down(cooled, LEASE_SECONDS)
    assert limiter.acquire(10, max_wait=0).key == other
    assert _refused(limiter)
    backend.wait(LEASE_SECONDS + 0.05)
    assert limiter.acquire(10, max_wait=0).key == cooled


def test_revoked_keys_leave_the_rotation(backend: Backend) -> None:
    first, second = _key("sk-a"), _key("sk-b")
    limiter = backend.make(first, second)
    limiter.revoke(first)
    assert limiter.acquire(10, max_wait=0).key == second
    limiter.revoke(second)
    assert limiter.revoked() == {first.id, second.id}
    with pytest.raises(StepFailed, match="every API key is revoked"):
        limiter.acquire(10, max_wait=0)


def test_call_over_every_keys_tpm_fails(backend: Backend) -> None:
    limiter = backend.make(_key("sk-a", tpm=500), _key("sk-b", tpm=700))
    with pytest.raises(StepFailed, match=r"exceeds every key's TPM \(700\)"):
        limiter.acquire(701, max_wait=0)


def test_admitted_calls_leave_their_wait_as_a_sample(backend: Backend) -> None:
    limiter = backend.make(_key("sk-a"))
    limiter.reset_wait_samples()
    lease = limiter.acquire(10, max_wait=0)
    assert limiter.wait_samples() == [pytest.approx(lease.waited, abs=1e-3)]
    limiter.reset_wait_samples()
    assert limiter.wait_samples() == []
