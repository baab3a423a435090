"""Circuit breakers whose state the whole fleet shares, built around pybreaker.

pybreaker gives the vocabulary (states, ``CircuitBreakerError``, listeners, the storage
interface); what it does not give is built here, its rules kept by a :class:`BreakerStore`
(Lua on Redis for the fleet, :class:`MemoryBreakerStore` in one process):
- trips on an error *rate* over the last ``window`` calls with a minimum volume, not only
  on consecutive failures;
- exactly one half-open probe across the fleet (a lease in the store), not one per process;
- no lock held around the call: concurrent calls run concurrently;
- one clock, the store's (Redis ``TIME``), for ``opened_at``;
- each transition is reported once for the fleet: by the process whose call caused it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import pybreaker
import redis

from orchestrator.breakers.policy import BreakerPolicy, BreakerStatus
from orchestrator.breakers.redis_store import RedisBreakerStore
from orchestrator.breakers.store import BreakerStore, Decision

log = logging.getLogger(__name__)
T = TypeVar("T")


def _store(store: BreakerStore | redis.Redis) -> BreakerStore:
    """A Redis client stands for the breaker store in that Redis."""
    return RedisBreakerStore(store) if isinstance(store, redis.Redis) else store


class FleetBreaker:
    """One breaker, by name, for every process sharing its store."""

    def __init__(self, store: BreakerStore | redis.Redis, name: str, policy: BreakerPolicy,
                 owner: Callable[[], str], *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.store = _store(store)
        self.name = name
        self.policy = policy
        self._owner = owner
        self.storage = self.store.storage(name)
        # pybreaker's object carries the name, the listeners and the state vocabulary;
        # its call() is not used, because it holds a lock for the whole call.
        self.pybreaker = pybreaker.CircuitBreaker(name=name, state_storage=self.storage)

    def call(self, fn: Callable[[], T], *, is_failure: Callable[[BaseException], bool]) -> T:
        """Run ``fn`` unless the breaker is open.

        Raises ``pybreaker.CircuitBreakerError`` at once when open (or when another
        process holds the half-open probe); otherwise ``fn``'s own result or exception.
        Exceptions for which ``is_failure`` is false pass through without counting.
        """
        if not self.enabled:
            return fn()
        owner = self._owner()
        admit = self.store.admit(self.name, self.policy, owner)
        if admit.decision is Decision.OPEN:
            raise pybreaker.CircuitBreakerError(f"circuit breaker {self.name!r} is open")
        probe = admit.decision is Decision.PROBE
        if probe and admit.half_opened:
            self._report(pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN, "probing")
        try:
            result = fn()
        except BaseException as exc:
            if is_failure(exc):
                self._outcome(False, probe, owner, reason=f"{type(exc).__name__}: {exc}")
            elif probe:
                self._outcome(True, probe, owner, reason="probe answered")
            raise
        self._outcome(True, probe, owner, reason="probe succeeded")
        return result

    def _outcome(self, ok: bool, probe: bool, owner: str, *, reason: str) -> None:
        outcome = self.store.record(self.name, self.policy, ok=ok, probe=probe, owner=owner)
        if outcome.transition == "open":
            before = pybreaker.STATE_HALF_OPEN if probe else pybreaker.STATE_CLOSED
            detail = (f"probe failed: {reason}" if probe else
                      f"{outcome.failures} of the last {outcome.calls} calls failed ({reason})")
            self._report(before, pybreaker.STATE_OPEN, detail)
        elif outcome.transition == "closed":
            self._report(pybreaker.STATE_HALF_OPEN, pybreaker.STATE_CLOSED, reason)

    def _report(self, old: str, new: str, detail: str) -> None:
        """Log and record a transition: only the process that caused it calls this."""
        log.warning("breaker %s: %s -> %s (%s)", self.name, old, new, detail)
        self.store.report(self.name, old, new, detail)
        for listener in self.pybreaker.listeners:
            listener.state_change(self.pybreaker, old, new)  # type: ignore[arg-type]

    def is_open(self) -> bool:
        """True while the fleet's breaker is open (one read of the store)."""
        return self.enabled and self.store.is_open(self.name)

    def force(self, state: str) -> None:
        """Force ``open`` (stays open, no probes, until forced closed) or ``closed``."""
        if state not in (pybreaker.STATE_OPEN, pybreaker.STATE_CLOSED):
            raise ValueError(f"a breaker can be forced open or closed, not {state!r}")
        old = self.store.force(self.name, state)
        if old == state:
            # Not a transition (no event, no metric); only its error window was reset.
            log.warning("breaker %s: forced %s by an operator (it was %s already; its error "
                        "window is reset)", self.name, state, old)
            return
        self._report(old, state, "forced by an operator")

    def status(self) -> BreakerStatus:
        return self.store.status(self.name, self.policy)


class Breakers:
    """This process's breaker objects, by name (their state lives in the store)."""

    def __init__(self, store: BreakerStore | redis.Redis, owner: Callable[[], str], *,
                 enabled: bool = True) -> None:
        self.store = _store(store)
        self.owner = owner
        self.enabled = enabled
        self._breakers: dict[str, FleetBreaker] = {}

    def get(self, name: str, policy: BreakerPolicy | None = None) -> FleetBreaker:
        found = self._breakers.get(name)
        if found is None:
            found = FleetBreaker(self.store, name, policy or BreakerPolicy(), self.owner,
                                 enabled=self.enabled)
            self._breakers[name] = found
        return found


def known_breakers(client: redis.Redis) -> list[str]:
    """Names of every breaker the fleet has used."""
    return RedisBreakerStore(client).names()


def recent_events(client: redis.Redis, limit: int = 20) -> list[str]:
    return RedisBreakerStore(client).events(limit)
