"""A breaker store in this process's memory: the rules of ``lua/admit.lua`` and
``lua/record.lua`` in Python, on a clock the caller may control.

For tests and single-process use: breakers sharing one :class:`MemoryBreakerStore` behave
as the fleet's breakers sharing one Redis do (a lock stands for the atomicity of Lua).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pybreaker

from orchestrator.breakers.policy import BreakerPolicy, BreakerStatus
from orchestrator.breakers.store import Admit, Decision, Outcome
from orchestrator.constants import BREAKER_EVENTS_KEPT

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN


@dataclass
class _State:
    state: str = CLOSED
    forced: bool = False
    opened_at_ms: int | None = None
    window: list[bool] = field(default_factory=list)  # newest first; True: failed
    probe: tuple[str, int] | None = None  # (owner, lease expiry ms)


class MemoryBreakerStore:
    """Breaker state of every name, in memory. ``clock``: seconds since the epoch."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._breakers: dict[str, _State] = {}
        self._names: set[str] = set()
        self._events: list[str] = []
        self.counters: dict[str, int] = {}
        self._lock = threading.Lock()

    def _now_ms(self) -> int:
        return math.floor(self.clock() * 1000 + 1e-6)

    def _get(self, name: str) -> _State:
        return self._breakers.setdefault(name, _State())

    def _probe_holder(self, found: _State, now: int) -> tuple[str, int] | None:
        if found.probe is not None and found.probe[1] <= now:
            found.probe = None  # the lease expired
        return found.probe

    def admit(self, name: str, policy: BreakerPolicy, owner: str) -> Admit:
        with self._lock:
            now = self._now_ms()
            self._names.add(name)
            found = self._get(name)
            if found.state == CLOSED:
                return Admit(Decision.CLOSED)
            if found.forced:
                return Admit(Decision.OPEN, wait_ms=-1)
            due = (found.opened_at_ms or 0) + int(policy.reset_timeout * 1000)
            if now < due:
                return Admit(Decision.OPEN, wait_ms=due - now)
            holder = self._probe_holder(found, now)
            if holder is None:
                found.probe = (owner, now + int(policy.probe_timeout * 1000))
                half_opened = found.state != HALF_OPEN
                found.state = HALF_OPEN
                return Admit(Decision.PROBE, half_opened=half_opened)
            return Admit(Decision.OPEN, wait_ms=holder[1] - now)

    def record(self, name: str, policy: BreakerPolicy, *, ok: bool, probe: bool,
               owner: str) -> Outcome:
        with self._lock:
            now = self._now_ms()
            found = self._get(name)
            if probe:
                holder = self._probe_holder(found, now)
                if holder is not None and holder[0] == owner:
                    found.probe = None
                if found.state != HALF_OPEN:
                    return Outcome("", 0, 0)
                if ok:
                    found.state = CLOSED
                    found.window = []
                    return Outcome("closed", 0, 0)
                found.state, found.opened_at_ms = OPEN, now
                return Outcome("open", 1, 1)
            if found.state != CLOSED:
                return Outcome("", 0, 0)  # admitted just before it opened: changes nothing
            found.window = [not ok, *found.window][: policy.window]
            failures, calls = sum(found.window), len(found.window)
            if not ok and calls >= policy.min_calls and failures / calls >= policy.threshold:
                found.state, found.opened_at_ms, found.forced = OPEN, now, False
                found.window = []
                return Outcome("open", failures, calls)
            return Outcome("", failures, calls)

    def force(self, name: str, state: str) -> str:
        with self._lock:
            found = self._get(name)
            old = found.state
            found.state = state
            found.forced = state == OPEN
            found.opened_at_ms = int(self.clock()) * 1000  # Redis TIME's seconds, as forced
            found.window = []
            found.probe = None
            self._names.add(name)
            return old

    def status(self, name: str, policy: BreakerPolicy) -> BreakerStatus:
        with self._lock:
            found = self._breakers.get(name, _State())
            next_probe: float | None = None
            if found.state != CLOSED and not found.forced:
                due = (found.opened_at_ms or 0) + int(policy.reset_timeout * 1000)
                next_probe = max(0.0, (due - self._now_ms()) / 1000)
            return BreakerStatus(name, found.state, found.forced, sum(found.window),
                                 len(found.window), next_probe)

    def is_open(self, name: str) -> bool:
        with self._lock:
            found = self._breakers.get(name)
            return found is not None and found.state == OPEN

    def report(self, name: str, old: str, new: str, detail: str) -> None:
        with self._lock:
            self._events.insert(0, f"{self.clock():.3f}|{name}|{old}|{new}|{detail}")
            del self._events[BREAKER_EVENTS_KEPT:]
            counter = f"breaker_transitions:{name}:{new}"
            self.counters[counter] = self.counters.get(counter, 0) + 1

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._names)

    def events(self, limit: int = 20) -> list[str]:
        with self._lock:
            return self._events[:limit]

    def storage(self, name: str) -> pybreaker.CircuitBreakerStorage:
        return _MemoryStorage(self, name)


class _MemoryStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker's view of one breaker of a :class:`MemoryBreakerStore`."""

    def __init__(self, store: MemoryBreakerStore, name: str) -> None:
        super().__init__(name)
        self.store = store

    @property
    def _found(self) -> _State:
        return self.store._get(self._name)

    @property
    def state(self) -> str:
        return self._found.state

    @state.setter
    def state(self, state: str) -> None:
        self._found.state = state

    def increment_counter(self) -> None:  # the window, not a counter, decides here
        pass

    def reset_counter(self) -> None:
        self._found.window = []

    def increment_success_counter(self) -> None:
        pass

    def reset_success_counter(self) -> None:
        pass

    @property
    def counter(self) -> int:
        return sum(self._found.window)

    @property
    def success_counter(self) -> int:
        return 0

    @property
    def opened_at(self) -> datetime | None:
        value = self._found.opened_at_ms
        return datetime.fromtimestamp(value / 1000, tz=UTC) if value else None

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        self._found.opened_at_ms = int(value.timestamp() * 1000)
