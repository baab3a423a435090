"""The LLM limiter's rules, on the in-memory limiter (the same rules as the Lua in Redis):
per key concurrency, requests and tokens per rolling minute, cooldowns, revoked keys,
arrival order."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from orchestrator.errors import StepFailed, TransientStepError
from orchestrator.llm.keys import ApiKey, Provider
from orchestrator.llm.limiter import Lease
from orchestrator.testing import ManualClock, MemoryLimiter

LEASE_SECONDS = 30.0


def _limiter(*keys: ApiKey) -> tuple[MemoryLimiter, ManualClock]:
    clock = ManualClock()
    provider = Provider("primary", "http://llm.example/v1", "m", keys)
    return MemoryLimiter(provider, lease_seconds=LEASE_SECONDS, clock=clock), clock


def _key(name: str = "sk-a", *, rpm: int = 100, tpm: int = 100_000,
         concurrency: int = 10) -> ApiKey:
    return ApiKey(name, rpm=rpm, tpm=tpm, concurrency=concurrency)


def _refused(limiter: MemoryLimiter, tokens: int = 10) -> bool:
    try:
        limiter.release(limiter.acquire(tokens, max_wait=0), None)
    except TransientStepError:
        return True
    return False


def test_no_more_calls_in_flight_than_the_keys_concurrency() -> None:
    limiter, _ = _limiter(_key(concurrency=2))
    first = limiter.acquire(10, max_wait=0)
    limiter.acquire(10, max_wait=0)
    assert _refused(limiter)
    limiter.release(first, 10)
    assert not _refused(limiter)


def test_requests_per_minute_count_over_a_rolling_window() -> None:
    limiter, clock = _limiter(_key(rpm=3))
    for _ in range(3):
        limiter.release(limiter.acquire(10, max_wait=0), 10)
    assert _refused(limiter)
    clock.advance(59.9)
    assert _refused(limiter)
    clock.advance(0.1)
    assert not _refused(limiter)


def test_tokens_are_settled_to_what_the_provider_reported() -> None:
    limiter, _ = _limiter(_key(tpm=1_000))
    limiter.release(limiter.acquire(600, max_wait=0), 100)  # estimated 600, used 100
    assert not _refused(limiter, 800)


def test_unsettled_reservation_keeps_counting_against_the_minute() -> None:
    limiter, clock = _limiter(_key(tpm=1_000))
    limiter.release(limiter.acquire(600, max_wait=0), None)  # the call failed: no usage
    assert _refused(limiter, 800)
    clock.advance(60)
    assert not _refused(limiter, 800)


def test_call_larger_than_every_keys_tpm_fails_at_once() -> None:
    limiter, _ = _limiter(_key("sk-a", tpm=500), _key("sk-b", tpm=700))
    with pytest.raises(StepFailed, match=r"exceeds every key's TPM \(700\)"):
        limiter.acquire(701, max_wait=5)


def test_revoked_key_leaves_the_rotation_and_none_left_fails_the_call() -> None:
    first, second = _key("sk-a"), _key("sk-b")
    limiter, _ = _limiter(first, second)
    limiter.revoke(first)
    assert limiter.acquire(10, max_wait=0).key == second
    limiter.revoke(second)
    assert limiter.revoked() == {first.id, second.id}
    with pytest.raises(StepFailed, match="every API key is revoked"):
        limiter.acquire(10, max_wait=5)


def test_call_goes_to_the_key_with_the_most_headroom() -> None:
    busy, idle = _key("sk-a", concurrency=4), _key("sk-b", concurrency=4)
    limiter, _ = _limiter(busy, idle)
    leases = [limiter.acquire(10, max_wait=0) for _ in range(4)]
    assert sorted(lease.key.secret for lease in leases) == ["sk-a", "sk-a", "sk-b", "sk-b"]


def test_cooled_down_key_takes_no_call_until_its_cooldown_ends() -> None:
    cooled, other = _key("sk-a"), _key("sk-b", concurrency=1)
    limiter, clock = _limiter(cooled, other)
    limiter.cool_down(cooled, 5.0)
    held = limiter.acquire(10, max_wait=0)
    assert held.key == other
    assert _refused(limiter)  # the other key is full, the cooled one still cooling
    clock.advance(5.0)
    assert limiter.acquire(10, max_wait=0).key == cooled


def test_lease_of_a_dead_worker_frees_its_slot_when_it_expires() -> None:
    limiter, clock = _limiter(_key(concurrency=1))
    lost = limiter.acquire(10, max_wait=0)  # its worker dies: never released
    assert limiter.in_flight() == {lost.key.id: 1}
    assert _refused(limiter)
    clock.advance(LEASE_SECONDS + 0.001)
    assert limiter.in_flight() == {lost.key.id: 0}
    assert not _refused(limiter)


def test_no_capacity_within_max_wait_is_a_transient_error_asking_a_retry() -> None:
    limiter, _ = _limiter(_key(concurrency=1))
    limiter.acquire(10, max_wait=0)
    started = time.monotonic()
    with pytest.raises(TransientStepError, match="no capacity within") as caught:
        limiter.acquire(10, max_wait=0.2)
    assert 0.2 <= time.monotonic() - started < 1.0
    assert caught.value.retry_after == 1.0


def test_release_wakes_the_waiting_call_at_once() -> None:
    limiter, _ = _limiter(_key(concurrency=1))
    held = limiter.acquire(10, max_wait=0)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(limiter.acquire, 10, max_wait=5.0)
        time.sleep(0.1)
        assert not waiting.done()
        limiter.release(held, 10)
        lease: Lease = waiting.result(timeout=5)
    assert 0.1 <= lease.waited < 0.6  # woken by the release, not by its heartbeat
    assert limiter.wait_samples()[0] == pytest.approx(lease.waited, abs=1e-3)


def test_calls_are_admitted_in_arrival_order() -> None:
    limiter, clock = _limiter(_key(tpm=1_000))
    limiter.release(limiter.acquire(300, max_wait=0), 300)
    with ThreadPoolExecutor(1) as pool:
        big = pool.submit(limiter.acquire, 800, max_wait=5.0)  # waits for the window
        time.sleep(0.1)
        assert _refused(limiter, 100)  # would fit, but arrived after the waiting call
        clock.advance(60)
        assert big.result(timeout=5).tokens == 800
