"""The breaker rules, run on every breaker store: Redis (the fleet's) and in memory.

Each test gets a store and a way to let time pass: the memory store's clock is advanced,
Redis's is waited for (the policies here use short timeouts). The same assertions hold
on both, so the in-memory store that unit tests use cannot drift from the Lua.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pybreaker
import pytest
import redis

from orchestrator.breakers import (
    BreakerPolicy,
    BreakerStore,
    FleetBreaker,
    MemoryBreakerStore,
    RedisBreakerStore,
)
from orchestrator.testing import ManualClock

POLICY = BreakerPolicy(window=4, min_calls=3, threshold=0.5, reset_timeout=0.3,
                       probe_timeout=0.6)


@dataclass
class Backend:
    store: BreakerStore
    wait: Callable[[float], None]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        clock = ManualClock()
        yield Backend(MemoryBreakerStore(clock), clock.advance)
        return
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        yield Backend(RedisBreakerStore(client), time.sleep)
    finally:
        client.close()


def _breaker(backend: Backend, owner: str = "w1") -> FleetBreaker:
    return FleetBreaker(backend.store, f"contract-{uuid.uuid4().hex[:6]}", POLICY,
                        owner=lambda: owner)


def _fail(breaker: FleetBreaker) -> None:
    with pytest.raises(TimeoutError):
        breaker.call(lambda: (_ for _ in ()).throw(TimeoutError()), is_failure=lambda e: True)


def _ok(breaker: FleetBreaker) -> str:
    return breaker.call(lambda: "ok", is_failure=lambda e: True)


def _open(backend: Backend, breaker: FleetBreaker) -> None:
    for _ in range(POLICY.min_calls):
        _fail(breaker)
    assert backend.store.is_open(breaker.name)


def test_failures_under_the_minimum_volume_keep_it_closed(backend: Backend) -> None:
    breaker = _breaker(backend)
    _fail(breaker)
    _fail(breaker)
    status = breaker.status()
    assert (status.state, status.failures, status.calls) == ("closed", 2, 2)
    assert _ok(breaker) == "ok"


def test_error_rate_at_the_threshold_opens_it_and_empties_the_window(
    backend: Backend,
) -> None:
    breaker = _breaker(backend)
    _ok(breaker)
    _ok(breaker)
    _fail(breaker)  # 1 of 3: under the threshold
    assert breaker.status().state == "closed"
    _fail(breaker)  # 2 of 4 = 0.5
    status = breaker.status()
    assert (status.state, status.calls) == ("open", 0)
    with pytest.raises(pybreaker.CircuitBreakerError):
        _ok(breaker)


def test_window_keeps_only_the_last_calls(backend: Backend) -> None:
    breaker = _breaker(backend)
    _fail(breaker)
    for _ in range(POLICY.window):
        _ok(breaker)
    status = breaker.status()
    assert (status.failures, status.calls) == (0, POLICY.window)


def test_one_probe_after_the_reset_timeout_and_its_success_closes(backend: Backend) -> None:
    breaker = _breaker(backend)
    _open(backend, breaker)
    backend.wait(POLICY.reset_timeout + 0.05)
    first = backend.store.admit(breaker.name, POLICY, "w1")
    second = backend.store.admit(breaker.name, POLICY, "w2")
    assert (first.decision.value, first.half_opened) == ("probe", True)
    assert second.decision.value == "open" and second.wait_ms > 0
    assert breaker.status().state == "half-open"
    outcome = backend.store.record(breaker.name, POLICY, ok=True, probe=True, owner="w1")
    assert outcome.transition == "closed"
    assert breaker.status().state == "closed"


def test_failed_probe_opens_it_again_until_the_next_reset_timeout(backend: Backend) -> None:
    breaker = _breaker(backend)
    _open(backend, breaker)
    backend.wait(POLICY.reset_timeout + 0.05)
    _fail(breaker)  # the probe
    status = breaker.status()
    assert status.state == "open"
    assert status.next_probe_in is not None and status.next_probe_in > POLICY.reset_timeout / 2


def test_probe_lease_expires_so_a_dead_probe_does_not_block_for_ever(backend: Backend) -> None:
    breaker = _breaker(backend)
    _open(backend, breaker)
    backend.wait(POLICY.reset_timeout + 0.05)
    assert backend.store.admit(breaker.name, POLICY, "dead").decision.value == "probe"
    backend.wait(POLICY.probe_timeout + 0.05)
    again = backend.store.admit(breaker.name, POLICY, "w2")
    assert (again.decision.value, again.half_opened) == ("probe", False)


def test_outcome_of_a_call_admitted_before_it_opened_changes_nothing(backend: Backend) -> None:
    breaker = _breaker(backend)
    _open(backend, breaker)
    late = backend.store.record(breaker.name, POLICY, ok=False, probe=False, owner="w1")
    assert (late.transition, late.failures, late.calls) == ("", 0, 0)
    assert breaker.status().calls == 0


def test_forced_open_refuses_without_probes_until_forced_closed(backend: Backend) -> None:
    breaker = _breaker(backend)
    breaker.force("open")
    backend.wait(POLICY.reset_timeout + 0.05)
    refused = backend.store.admit(breaker.name, POLICY, "w1")
    assert (refused.decision.value, refused.wait_ms) == ("open", -1)
    status = breaker.status()
    assert status.forced and status.next_probe_in is None
    breaker.force("closed")
    assert _ok(breaker) == "ok"
    assert not breaker.status().forced


def test_forcing_reports_one_transition_and_names_the_breaker(backend: Backend) -> None:
    breaker = _breaker(backend)
    breaker.force("closed")  # closed already: no transition
    breaker.force("open")
    breaker.force("open")
    events = [e for e in backend.store.events(50) if f"|{breaker.name}|" in e]
    assert len(events) == 1 and "|closed|open|forced by an operator" in events[0]
    assert breaker.name in backend.store.names()
