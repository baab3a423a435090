"""Circuit breakers whose state the whole fleet shares, built around pybreaker.

pybreaker gives the vocabulary (states, ``CircuitBreakerError``, listeners, the storage
interface); what it does not give is built here, in Lua on Redis:
- trips on an error *rate* over the last ``window`` calls with a minimum volume, not only
  on consecutive failures;
- exactly one half-open probe across the fleet (a lease in Redis), not one per process;
- no lock held around the call: concurrent calls run concurrently;
- one clock, Redis ``TIME``, for ``opened_at``;
- each transition is reported once for the fleet: by the process whose call caused it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import pybreaker
import redis

from orchestrator.breakers.policy import BreakerPolicy, BreakerStatus
from orchestrator.constants import (
    BREAKER,
    BREAKER_EVENTS,
    BREAKER_EVENTS_KEPT,
    BREAKER_NAMES,
    BREAKER_PROBE,
    BREAKER_WINDOW,
)
from orchestrator.lua import script
from orchestrator.telemetry import count

log = logging.getLogger(__name__)
T = TypeVar("T")


class RedisBreakerStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker's storage interface over the fleet-wide hash (for pybreaker-aware code)."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        super().__init__(name)
        self.client = client
        self.key = BREAKER.format(name=name)

    @property
    def state(self) -> str:
        value = self.client.hget(self.key, "state")
        return value.decode() if value else pybreaker.STATE_CLOSED

    @state.setter
    def state(self, state: str) -> None:
        self.client.hset(self.key, "state", state)

    def increment_counter(self) -> None:  # the window, not a counter, decides here
        pass

    def reset_counter(self) -> None:
        self.client.delete(BREAKER_WINDOW.format(name=self._name))

    def increment_success_counter(self) -> None:
        pass

    def reset_success_counter(self) -> None:
        pass

    @property
    def counter(self) -> int:
        window = self.client.lrange(BREAKER_WINDOW.format(name=self._name), 0, -1)
        return sum(1 for v in window if v == b"1")

    @property
    def success_counter(self) -> int:
        return 0

    @property
    def opened_at(self) -> datetime | None:
        value = self.client.hget(self.key, "opened_at")
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC) if value else None

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self.client.hset(self.key, "opened_at", int(value.timestamp() * 1000))


class FleetBreaker:
    """One breaker, by name, for every process of the fleet."""

    def __init__(self, client: redis.Redis, name: str, policy: BreakerPolicy,
                 owner: Callable[[], str], *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.client = client
        self.name = name
        self.policy = policy
        self._owner = owner
        self._key = BREAKER.format(name=name)
        self._window = BREAKER_WINDOW.format(name=name)
        self._probe = BREAKER_PROBE.format(name=name)
        self.storage = RedisBreakerStorage(client, name)
        # pybreaker's object carries the name, the listeners and the state vocabulary;
        # its call() is not used, because it holds a lock for the whole call.
        self.pybreaker = pybreaker.CircuitBreaker(name=name, state_storage=self.storage)
        self._admit = script(client, "orchestrator.breakers", "admit")
        self._record = script(client, "orchestrator.breakers", "record")

    def call(self, fn: Callable[[], T], *, is_failure: Callable[[BaseException], bool]) -> T:
        """Run ``fn`` unless the breaker is open.

        Raises ``pybreaker.CircuitBreakerError`` at once when open (or when another
        process holds the half-open probe); otherwise ``fn``'s own result or exception.
        Exceptions for which ``is_failure`` is false pass through without counting.
        """
        if not self.enabled:
            return fn()
        owner = self._owner()
        reply = self._admit(
            keys=[self._key, self._probe, BREAKER_NAMES],
            args=[int(self.policy.reset_timeout * 1000), int(self.policy.probe_timeout * 1000),
                  owner, self.name],
        )
        decision = reply[0].decode()
        if decision == "open":
            raise pybreaker.CircuitBreakerError(f"circuit breaker {self.name!r} is open")
        probe = decision == "probe"
        if probe and reply[1] == b"half-open":
            self._report(pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN, "probing")
        try:
            result = fn()
        except BaseException as exc:
            if is_failure(exc):
                self._outcome("fail", probe, owner, reason=f"{type(exc).__name__}: {exc}")
            elif probe:
                self._outcome("ok", probe, owner, reason="probe answered")
            raise
        self._outcome("ok", probe, owner, reason="probe succeeded")
        return result

    def _outcome(self, outcome: str, probe: bool, owner: str, *, reason: str) -> None:
        p = self.policy
        reply = self._record(
            keys=[self._key, self._window, self._probe],
            args=[outcome, "1" if probe else "0", owner, p.window, p.min_calls, p.threshold],
        )
        transition = reply[0].decode()
        if transition == "open":
            before = pybreaker.STATE_HALF_OPEN if probe else pybreaker.STATE_CLOSED
            detail = (f"probe failed: {reason}" if probe else
                      f"{int(reply[1])} of the last {int(reply[2])} calls failed ({reason})")
            self._report(before, pybreaker.STATE_OPEN, detail)
        elif transition == "closed":
            self._report(pybreaker.STATE_HALF_OPEN, pybreaker.STATE_CLOSED, reason)

    def _report(self, old: str, new: str, detail: str) -> None:
        """Log and record a transition: only the process that caused it calls this."""
        log.warning("breaker %s: %s -> %s (%s)", self.name, old, new, detail)
        event = f"{time.time():.3f}|{self.name}|{old}|{new}|{detail}"
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(BREAKER_EVENTS, event)
        pipe.ltrim(BREAKER_EVENTS, 0, BREAKER_EVENTS_KEPT - 1)
        pipe.execute()
        count(self.client, f"breaker_transitions:{self.name}:{new}")
        for listener in self.pybreaker.listeners:
            listener.state_change(self.pybreaker, old, new)  # type: ignore[arg-type]

    def is_open(self) -> bool:
        """True while the fleet's breaker is open (one Redis read)."""
        return self.enabled and self.client.hget(self._key, "state") == b"open"

    def force(self, state: str) -> None:
        """Force ``open`` (stays open, no probes, until forced closed) or ``closed``."""
        if state not in (pybreaker.STATE_OPEN, pybreaker.STATE_CLOSED):
            raise ValueError(f"a breaker can be forced open or closed, not {state!r}")
        old = self.storage.state
        now_ms = int(self.client.time()[0]) * 1000
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self._key, mapping={
            "state": state, "forced": "1" if state == pybreaker.STATE_OPEN else "0",
            "opened_at": now_ms,
        })
        pipe.delete(self._window, self._probe)
        pipe.sadd(BREAKER_NAMES, self.name)
        pipe.execute()
        if old == state:
            # Not a transition (no event, no metric); only its error window was reset.
            log.warning("breaker %s: forced %s by an operator (it was %s already; its error "
                        "window is reset)", self.name, state, old)
            return
        self._report(old, state, "forced by an operator")

    def status(self) -> BreakerStatus:
        raw = {k.decode(): v.decode() for k, v in self.client.hgetall(self._key).items()}
        window = self.client.lrange(self._window, 0, -1)
        state = raw.get("state", pybreaker.STATE_CLOSED)
        forced = raw.get("forced") == "1"
        next_probe: float | None = None
        if state != pybreaker.STATE_CLOSED and not forced:
            seconds, micros = self.client.time()
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            due = int(raw.get("opened_at", "0")) + int(self.policy.reset_timeout * 1000)
            next_probe = max(0.0, (due - now_ms) / 1000)
        return BreakerStatus(self.name, state, forced, sum(1 for v in window if v == b"1"),
                             len(window), next_probe)


class Breakers:
    """This process's breaker objects, by name (their state lives in Redis)."""

    def __init__(self, client: redis.Redis, owner: Callable[[], str], *,
                 enabled: bool = True) -> None:
        self.client = client
        self.owner = owner
        self.enabled = enabled
        self._breakers: dict[str, FleetBreaker] = {}

    def get(self, name: str, policy: BreakerPolicy | None = None) -> FleetBreaker:
        found = self._breakers.get(name)
        if found is None:
            found = FleetBreaker(self.client, name, policy or BreakerPolicy(), self.owner,
                                 enabled=self.enabled)
            self._breakers[name] = found
        return found


def known_breakers(client: redis.Redis) -> list[str]:
    """Names of every breaker the fleet has used."""
    return sorted(m.decode() for m in client.smembers(BREAKER_NAMES))


def recent_events(client: redis.Redis, limit: int = 20) -> list[str]:
    return [e.decode() for e in client.lrange(BREAKER_EVENTS, 0, limit - 1)]
