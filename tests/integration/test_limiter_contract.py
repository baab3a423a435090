"""The LLM limiter's rules, run on both limiters: Redis (the fleet's Lua) and the
in-memory one unit tests use, so the fake cannot drift from the Lua.

Time passes by the memory clock, or by waiting for Redis's (leases, cooldowns and key
cool-offs here are short; the rolling minute of RPM/TPM is left to the unit tests).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import redis

from orchestrator.errors import ProviderOutage, StepFailed, TransientStepError
from orchestrator.llm.keys import ApiKey, Provider
from orchestrator.llm.limiter import Lease, Limiter, RedisLimiter
from orchestrator.llm.rotation import KeyState, NoUsableKey
from orchestrator.testing import ManualClock, MemoryLimiter

LEASE_SECONDS = 0.4
COOLOFF = 0.5


@dataclass
class Backend:
    make: Callable[..., Limiter]
    wait: Callable[[float], None]
    # Another process's limiter over the same provider (in memory: the one limiter).
    twin: Callable[[Limiter], Limiter]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    def provider(*keys: ApiKey) -> Provider:
        return Provider("primary", "http://llm.example/v1", uuid.uuid4().hex[:8], keys)

    if request.param == "memory":
        clock = ManualClock()
        yield Backend(lambda *keys: MemoryLimiter(provider(*keys), lease_seconds=LEASE_SECONDS,
                                                  cooloff=COOLOFF, clock=clock),
                      clock.advance, lambda limiter: limiter)
        return
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))

    def redis_limiter(found: Provider) -> RedisLimiter:
        return RedisLimiter(client, found, lease_seconds=LEASE_SECONDS, cooloff=COOLOFF)

    try:
        yield Backend(lambda *keys: redis_limiter(provider(*keys)), time.sleep,
                      lambda limiter: redis_limiter(limiter.provider))
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


def _state(limiter: Limiter, key: ApiKey) -> KeyState:
    return next(s.state for s in limiter.statuses() if s.key == key.id)


def test_refused_key_leaves_the_rotation_for_its_cooloff(backend: Backend) -> None:
    first, second = _key("sk-a"), _key("sk-b")
    limiter = backend.make(first, second)
    record = limiter.take_out(first, 401)
    assert record is not None and record.status == 401 and record.strikes == 1
    assert record.probe_at_ms - record.last_ms == COOLOFF * 1000
    assert limiter.revoked() == {first.id}
    assert limiter.out_of_rotation() == {first.id: record}
    assert _state(limiter, first) is KeyState.OUT
    for _ in range(3):
        lease = limiter.acquire(10, max_wait=0)
        assert lease.key == second and not lease.probe
        limiter.release(lease, 10)


def test_every_key_out_is_an_outage_naming_each_key_and_why(backend: Backend) -> None:
    first, second = _key("sk-a"), _key("sk-b")
    limiter = backend.make(first, second)
    limiter.take_out(first, 401)
    limiter.take_out(second, 403)
    with pytest.raises(NoUsableKey) as caught:
        limiter.acquire(10, max_wait=0)
    assert isinstance(caught.value, ProviderOutage)  # the step holds, then fails
    message = str(caught.value)
    assert f"{first.id} refused with HTTP 401 at " in message
    assert f"{second.id} refused with HTTP 403 at " in message
    assert "sk-a" not in message and "sk-b" not in message
    assert caught.value.retry_after == pytest.approx(COOLOFF, abs=0.1)


def test_after_the_cooloff_exactly_one_call_probes_the_key(backend: Backend) -> None:
    key = _key("sk-a")
    limiter = backend.make(key)
    others = [backend.twin(limiter) for _ in range(3)]
    limiter.take_out(key, 401)
    backend.wait(COOLOFF + 0.05)

    def try_once(found: Limiter) -> Lease | None:
        try:
            return found.acquire(10, max_wait=0)
        except TransientStepError:
            return None

    with ThreadPoolExecutor(4) as pool:
        leases = list(pool.map(try_once, [limiter, *others]))
    granted = [lease for lease in leases if lease is not None]
    assert len(granted) == 1 and granted[0].probe
    assert _state(limiter, key) is KeyState.PROBING
    assert _refused(limiter)  # the probe is in flight: nobody else uses the key


def test_probe_answered_brings_the_key_back(backend: Backend) -> None:
    key = _key("sk-a")
    limiter = backend.make(key)
    limiter.take_out(key, 401)
    backend.wait(COOLOFF + 0.05)
    probe = limiter.acquire(10, max_wait=0)
    assert probe.probe
    assert limiter.restore(key.id)
    limiter.release(probe, 10)
    assert limiter.revoked() == set()
    assert _state(limiter, key) is KeyState.USABLE
    lease = limiter.acquire(10, max_wait=0)
    assert lease.key == key and not lease.probe


def test_refused_probe_sends_the_key_back_for_twice_as_long(backend: Backend) -> None:
    key = _key("sk-a")
    limiter = backend.make(key)
    first = limiter.take_out(key, 401)
    assert first is not None
    backend.wait(COOLOFF + 0.05)
    probe = limiter.acquire(10, max_wait=0)
    again = limiter.take_out(key, 401, lease=probe)
    limiter.release(probe, None)
    assert again is not None and again.strikes == 2 and again.first_ms == first.first_ms
    assert again.probe_at_ms - again.last_ms == 2 * COOLOFF * 1000
    backend.wait(COOLOFF + 0.05)
    with pytest.raises(NoUsableKey, match="2 refusals in a row"):
        limiter.acquire(10, max_wait=0)
    backend.wait(COOLOFF + 0.05)
    assert limiter.acquire(10, max_wait=0).probe


def test_refusal_of_a_call_already_in_flight_changes_nothing(backend: Backend) -> None:
    key = _key("sk-a")
    limiter = backend.make(key)
    one, two = limiter.acquire(10, max_wait=0), limiter.acquire(10, max_wait=0)
    record = limiter.take_out(key, 401, lease=one)
    assert limiter.take_out(key, 403, lease=two) is None
    assert limiter.out_of_rotation() == {key.id: record}


def test_probe_ending_without_a_verdict_leaves_the_key_to_the_next_call(
    backend: Backend,
) -> None:
    key = _key("sk-a")
    limiter = backend.make(key)
    limiter.take_out(key, 401)
    backend.wait(COOLOFF + 0.05)
    probe = limiter.acquire(10, max_wait=0)
    limiter.release(probe, None)  # a 5xx, a timeout: neither back nor refused
    assert limiter.revoked() == {key.id}
    assert limiter.acquire(10, max_wait=0).probe


def test_probe_of_a_dead_worker_expires_with_its_lease(backend: Backend) -> None:
    key = _key("sk-a")
    limiter = backend.make(key)
    limiter.take_out(key, 401)
    backend.wait(COOLOFF + 0.05)
    assert limiter.acquire(10, max_wait=0).probe  # its worker dies: never released
    assert _refused(limiter)
    backend.wait(LEASE_SECONDS + 0.05)
    assert limiter.acquire(10, max_wait=0).probe


def test_restore_returns_a_key_to_rotation_at_once(backend: Backend) -> None:
    key = _key("sk-a")
    limiter = backend.make(key)
    limiter.take_out(key, 401)
    assert limiter.restore(key.id)
    assert not limiter.restore(key.id)
    lease = limiter.acquire(10, max_wait=0)
    assert lease.key == key and not lease.probe


def test_statuses_show_each_keys_state_and_headroom(backend: Backend) -> None:
    first, second = _key("sk-a", rpm=5, tpm=1_000), _key("sk-b")
    limiter = backend.make(first, second)
    limiter.take_out(second, 403)
    limiter.release(limiter.acquire(100, max_wait=0), 60)
    held = limiter.acquire(50, max_wait=0)
    limiter.cool_down(first, 30)
    found = {s.key: s for s in limiter.statuses()}
    assert set(found) == {first.id, second.id}
    usable, out = found[first.id], found[second.id]
    assert (usable.state, usable.in_flight, usable.requests_left, usable.tokens_left) == (
        KeyState.COOLING, 1, 3, 890)
    assert usable.cooling_s == pytest.approx(30, abs=0.5) and usable.out is None
    assert out.state is KeyState.OUT and out.out is not None and out.out.status == 403
    assert out.next_probe_in_s == pytest.approx(COOLOFF, abs=0.1)
    assert out.as_json()["refused"]["status"] == 403
    limiter.release(held, 50)


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


def test_coarse_429_cooldown_ends_with_one_probe_at_a_time(backend: Backend) -> None:
    key = _key("sk-a")
    limiter = backend.make(key)
    limiter.cool_down(key, 0.2, probe_until=5.0)
    assert _refused(limiter)
    assert _state(limiter, key) is KeyState.COOLING
    backend.wait(0.25)
    probe = limiter.acquire(10, max_wait=0)  # one call probes the provider's window
    assert probe.key == key and not probe.probe  # not a probe of a refused key
    assert _refused(limiter)  # the others wait for its answer
    limiter.release(probe, 10)  # it answered: the key takes calls again, many at once
    held = [limiter.acquire(10, max_wait=0) for _ in range(3)]
    assert len({lease.key for lease in held}) == 1


def test_probe_without_an_answer_leaves_the_next_call_to_probe(backend: Backend) -> None:
    key = _key("sk-a")
    limiter = backend.make(key)
    limiter.cool_down(key, 0.1, probe_until=5.0)
    backend.wait(0.15)
    limiter.release(limiter.acquire(10, max_wait=0), None)  # a 5xx: no verdict
    probe = limiter.acquire(10, max_wait=0)
    assert _refused(limiter)
    limiter.release(probe, 10)
    assert not _refused(limiter)


def test_probing_ends_when_the_retry_after_does(backend: Backend) -> None:
    key = _key("sk-a")
    limiter = backend.make(key)
    limiter.cool_down(key, 0.1, probe_until=0.3)
    backend.wait(0.15)
    limiter.acquire(10, max_wait=0)  # a probe that never answers
    assert _refused(limiter)
    backend.wait(0.2)
    assert not _refused(limiter) and not _refused(limiter)


def test_a_longer_cooldown_is_kept_when_a_shorter_probe_one_comes(backend: Backend) -> None:
    key, other = _key("sk-a"), _key("sk-b", concurrency=1)
    limiter = backend.make(key, other)
    limiter.cool_down(key, 0.4)
    limiter.cool_down(key, 0.1, probe_until=0.3)
    backend.wait(0.15)
    assert limiter.acquire(10, max_wait=0).key == other
    assert _refused(limiter)
    backend.wait(0.3)
    assert limiter.acquire(10, max_wait=0).key == key
