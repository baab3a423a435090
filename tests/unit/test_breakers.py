"""Fleet breakers on the in-memory store: the same rules as the Lua on Redis (the
contract test in tests/integration runs these rules on both)."""

from __future__ import annotations

from collections.abc import Callable

import pybreaker
import pytest

from orchestrator.breakers import BreakerPolicy, Breakers, FleetBreaker, MemoryBreakerStore
from orchestrator.testing import ManualClock

POLICY = BreakerPolicy(window=10, min_calls=4, threshold=0.5, reset_timeout=10.0,
                       probe_timeout=30.0)


def _raise(exc: BaseException) -> Callable[[], None]:
    def call() -> None:
        raise exc

    return call


def _setup(owner: str = "w1") -> tuple[FleetBreaker, MemoryBreakerStore, ManualClock]:
    clock = ManualClock()
    store = MemoryBreakerStore(clock)
    return FleetBreaker(store, "orders", POLICY, owner=lambda: owner), store, clock


def _fail(breaker: FleetBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(TimeoutError):
            breaker.call(_raise(TimeoutError("slow")), is_failure=lambda e: True)


def test_half_the_recent_calls_failing_opens_the_breaker_and_calls_are_refused() -> None:
    breaker, _, _ = _setup()
    for _ in range(4):
        breaker.call(lambda: "ok", is_failure=lambda e: True)
    _fail(breaker, 3)
    assert breaker.status().state == "closed"  # 3 of 7
    _fail(breaker)  # 4 of 8
    assert breaker.status().state == "open" and breaker.is_open()
    ran: list[str] = []
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker.call(lambda: ran.append("called"), is_failure=lambda e: True)
    assert ran == []


def test_errors_that_are_not_failures_pass_through_uncounted() -> None:
    breaker, _, _ = _setup()
    for _ in range(6):
        with pytest.raises(KeyError):
            breaker.call(_raise(KeyError("bad input")), is_failure=lambda e: False)
    status = breaker.status()
    assert (status.state, status.calls) == ("closed", 0)


def test_one_probe_after_the_reset_timeout_closes_the_breaker_when_it_succeeds() -> None:
    breaker, store, clock = _setup()
    other = FleetBreaker(store, "orders", POLICY, owner=lambda: "w2")
    _fail(breaker, 4)
    clock.advance(9.9)
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker.call(lambda: "early", is_failure=lambda e: True)
    clock.advance(0.1)
    refused: list[str] = []

    def probe() -> str:
        try:  # while the probe runs, every other caller is refused
            other.call(lambda: "second", is_failure=lambda e: True)
        except pybreaker.CircuitBreakerError:
            refused.append("refused")
        return "probed"

    assert breaker.call(probe, is_failure=lambda e: True) == "probed"
    assert refused == ["refused"]
    assert breaker.status().state == "closed"
    assert other.call(lambda: "through", is_failure=lambda e: True) == "through"


def test_failed_probe_opens_the_breaker_for_another_reset_timeout() -> None:
    breaker, _, clock = _setup()
    _fail(breaker, 4)
    clock.advance(10)
    _fail(breaker)  # the probe
    status = breaker.status()
    assert status.state == "open" and status.next_probe_in == pytest.approx(10.0)


def test_probe_answered_with_an_error_that_is_not_a_failure_closes_it() -> None:
    breaker, _, clock = _setup()
    _fail(breaker, 4)
    clock.advance(10)
    with pytest.raises(KeyError):
        breaker.call(_raise(KeyError("refused input")), is_failure=lambda e: False)
    assert breaker.status().state == "closed"


def test_listeners_hear_each_transition_once() -> None:
    breaker, _, clock = _setup()
    heard: list[tuple[str, str]] = []

    class Listener(pybreaker.CircuitBreakerListener):
        def state_change(self, cb: pybreaker.CircuitBreaker, old_state: object,
                         new_state: object) -> None:
            heard.append((str(old_state), str(new_state)))

    breaker.pybreaker.add_listener(Listener())
    _fail(breaker, 4)
    with pytest.raises(pybreaker.CircuitBreakerError):  # refused: no second transition
        breaker.call(lambda: "refused", is_failure=lambda e: True)
    clock.advance(10)
    breaker.call(lambda: "ok", is_failure=lambda e: True)
    assert heard == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]


def test_transitions_are_kept_as_events_and_counted() -> None:
    breaker, store, _ = _setup()
    _fail(breaker, 4)
    [event] = store.events()
    assert "|orders|closed|open|4 of the last 4 calls failed (TimeoutError: slow)" in event
    assert store.counters == {"breaker_transitions:orders:open": 1}


def test_forced_open_breaker_never_probes_until_forced_closed() -> None:
    breaker, _, clock = _setup()
    breaker.force("open")
    clock.advance(3600)
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker.call(lambda: "probe?", is_failure=lambda e: True)
    status = breaker.status()
    assert status.forced and status.next_probe_in is None
    breaker.force("closed")
    assert breaker.call(lambda: "through", is_failure=lambda e: True) == "through"


def test_forcing_a_state_other_than_open_or_closed_is_refused() -> None:
    breaker, _, _ = _setup()
    with pytest.raises(ValueError, match="forced open or closed"):
        breaker.force("half-open")


def test_disabled_breakers_always_call_through() -> None:
    store = MemoryBreakerStore(ManualClock())
    breaker = Breakers(store, lambda: "w1", enabled=False).get("orders", POLICY)
    store.force("orders", "open")
    assert breaker.call(lambda: "through", is_failure=lambda e: True) == "through"
    assert not breaker.is_open()


def test_breakers_of_one_name_share_their_state_in_the_store() -> None:
    store = MemoryBreakerStore(ManualClock())
    here = Breakers(store, lambda: "host-a").get("orders", POLICY)
    there = Breakers(store, lambda: "host-b").get("orders", POLICY)
    _fail(here, 4)
    assert there.is_open()
    assert store.names() == ["orders"]


def test_error_rate_is_the_failed_share_of_the_window() -> None:
    breaker, _, _ = _setup()
    breaker.call(lambda: "ok", is_failure=lambda e: True)
    _fail(breaker)
    status = breaker.status()
    assert (status.failures, status.calls, status.error_rate) == (1, 2, 0.5)
