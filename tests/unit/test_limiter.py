"""The LLM limiter's rules, on the in-memory limiter (the same rules as the Lua in Redis):
per key concurrency, requests and tokens per rolling minute, cooldowns, keys out of
rotation (cool-off, one probe, doubling), arrival order."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from orchestrator.constants import LLM_KEY_COOLOFF_CAP_SECONDS
from orchestrator.errors import ProviderOutage, StepFailed, TransientStepError
from orchestrator.llm.keys import ApiKey, Provider
from orchestrator.llm.limiter import Lease
from orchestrator.llm.rotation import KeyState, NoUsableKey, cooloff_seconds
from orchestrator.testing import ManualClock, MemoryLimiter

LEASE_SECONDS = 30.0
COOLOFF = 300.0


def _limiter(*keys: ApiKey) -> tuple[MemoryLimiter, ManualClock]:
    clock = ManualClock()
    provider = Provider("primary", "http://llm.example/v1", "m", keys)
    return MemoryLimiter(provider, lease_seconds=LEASE_SECONDS, cooloff=COOLOFF,
                         clock=clock), clock


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


def test_refused_key_leaves_the_rotation_and_none_left_is_an_outage() -> None:
    first, second = _key("sk-a"), _key("sk-b")
    limiter, clock = _limiter(first, second)
    limiter.take_out(first, 401)
    assert limiter.acquire(10, max_wait=0).key == second
    clock.advance(100)
    limiter.take_out(second, 403)
    assert limiter.revoked() == {first.id, second.id}
    started = time.monotonic()
    with pytest.raises(NoUsableKey) as caught:
        limiter.acquire(10, max_wait=5)
    assert time.monotonic() - started < 1.0  # at once: nothing to wait for in line
    assert isinstance(caught.value, ProviderOutage)
    assert caught.value.retry_after == pytest.approx(COOLOFF - 100)  # the first probe
    assert f"{first.id} refused with HTTP 401 at 2023-11-14T22:13:20+00:00" in str(caught.value)
    assert f"{second.id} refused with HTTP 403" in str(caught.value)
    assert "next probe in 200s" in str(caught.value)


def test_key_is_probed_by_one_call_exactly_when_its_cooloff_ends() -> None:
    key = _key()
    limiter, clock = _limiter(key)
    limiter.take_out(key, 401)
    clock.advance(COOLOFF - 0.001)
    with pytest.raises(NoUsableKey, match="next probe in 0s"):
        limiter.acquire(10, max_wait=0)
    clock.advance(0.001)
    probe = limiter.acquire(10, max_wait=0)
    assert probe.probe and probe.key == key
    assert [s.state for s in limiter.statuses()] == [KeyState.PROBING]
    assert _refused(limiter)  # everyone else waits for the probe's verdict


def test_waiting_call_takes_the_key_its_probe_brings_back() -> None:
    key = _key()
    limiter, clock = _limiter(key)
    limiter.take_out(key, 401)
    clock.advance(COOLOFF)
    probe = limiter.acquire(10, max_wait=0)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(limiter.acquire, 10, max_wait=5.0)
        time.sleep(0.1)
        assert not waiting.done()
        limiter.restore(key.id)  # the probe answered
        limiter.release(probe, 10)
        lease: Lease = waiting.result(timeout=5)
    assert lease.key == key and not lease.probe and lease.waited < 0.6


def test_each_refused_probe_doubles_the_cooloff_up_to_the_cap() -> None:
    key = _key()
    limiter, clock = _limiter(key)
    record = limiter.take_out(key, 401)
    assert record is not None
    expected = [COOLOFF * 2, COOLOFF * 4, COOLOFF * 8, LLM_KEY_COOLOFF_CAP_SECONDS,
                LLM_KEY_COOLOFF_CAP_SECONDS]
    for strikes, cooloff in enumerate(expected, start=2):
        clock.advance((record.probe_at_ms - record.last_ms) / 1000)
        probe = limiter.acquire(10, max_wait=0)
        assert probe.probe
        record = limiter.take_out(key, 401, lease=probe)
        limiter.release(probe, None)
        assert record is not None and record.strikes == strikes
        assert (record.probe_at_ms - record.last_ms) / 1000 == cooloff


def test_cooloff_is_never_under_its_setting_even_over_the_cap() -> None:
    assert cooloff_seconds(7200.0, 5) == 7200.0
    assert cooloff_seconds(10.0, 1) == 10.0 and cooloff_seconds(10.0, 3) == 40.0


def test_refusals_from_calls_in_flight_are_one_incident() -> None:
    key = _key()
    limiter, clock = _limiter(key)
    leases = [limiter.acquire(10, max_wait=0) for _ in range(3)]
    first = limiter.take_out(key, 401, lease=leases[0])
    clock.advance(10)
    assert limiter.take_out(key, 401, lease=leases[1]) is None
    assert limiter.take_out(key, 401) is None
    assert limiter.out_of_rotation() == {key.id: first}


def test_restored_key_is_usable_at_once_and_a_late_probe_verdict_starts_afresh() -> None:
    key = _key()
    limiter, clock = _limiter(key)
    limiter.take_out(key, 401)
    clock.advance(COOLOFF)
    probe = limiter.acquire(10, max_wait=0)
    assert limiter.restore(key.id)  # the operator, while the probe is in flight
    assert not limiter.acquire(10, max_wait=0).probe
    late = limiter.take_out(key, 401, lease=probe)  # the probe's own verdict comes later
    assert late is not None and late.strikes == 1


def test_keys_list_their_headroom_in_the_rolling_minute() -> None:
    key = _key(rpm=10, tpm=1_000, concurrency=4)
    limiter, clock = _limiter(key)
    limiter.release(limiter.acquire(300, max_wait=0), 200)
    held = limiter.acquire(100, max_wait=0)
    [status] = limiter.statuses()
    assert (status.state, status.in_flight, status.concurrency) == (KeyState.USABLE, 1, 4)
    assert (status.requests_left, status.tokens_left) == (8, 700)
    clock.advance(60)
    [status] = limiter.statuses()
    assert (status.requests_left, status.tokens_left) == (10, 1_000)
    limiter.release(held, 100)


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
