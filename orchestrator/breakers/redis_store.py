"""The fleet's breaker store: Lua on Redis, Redis ``TIME`` the one clock.

Keys (see :mod:`orchestrator.constants`): the state hash (``state``, ``opened_at``,
``forced``), the outcome window (a list, newest first), the probe lease (a string with
an expiry), the set of names and the event list. ``admit`` and ``record`` are one Lua
script each (``lua/admit.lua``, ``lua/record.lua``), so their rules hold across processes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pybreaker
import redis

from orchestrator.breakers.policy import BreakerPolicy, BreakerStatus
from orchestrator.breakers.store import Admit, Decision, Outcome
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


class RedisBreakerStore:
    """Breaker state in one Redis, shared by every process that uses it."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._admit = script(client, "orchestrator.breakers", "admit")
        self._record = script(client, "orchestrator.breakers", "record")

    def admit(self, name: str, policy: BreakerPolicy, owner: str) -> Admit:
        reply = self._admit(
            keys=[BREAKER.format(name=name), BREAKER_PROBE.format(name=name), BREAKER_NAMES],
            args=[int(policy.reset_timeout * 1000), int(policy.probe_timeout * 1000),
                  owner, name],
        )
        decision = Decision(reply[0].decode())
        if decision is Decision.PROBE:
            return Admit(decision, half_opened=reply[1] == b"half-open")
        if decision is Decision.OPEN:
            return Admit(decision, wait_ms=int(reply[1]))
        return Admit(decision)

    def record(self, name: str, policy: BreakerPolicy, *, ok: bool, probe: bool,
               owner: str) -> Outcome:
        reply = self._record(
            keys=[BREAKER.format(name=name), BREAKER_WINDOW.format(name=name),
                  BREAKER_PROBE.format(name=name)],
            args=["ok" if ok else "fail", "1" if probe else "0", owner, policy.window,
                  policy.min_calls, policy.threshold],
        )
        return Outcome(reply[0].decode(), int(reply[1]), int(reply[2]))

    def force(self, name: str, state: str) -> str:
        old = RedisBreakerStorage(self.client, name).state
        now_ms = int(self.client.time()[0]) * 1000
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(BREAKER.format(name=name), mapping={
            "state": state, "forced": "1" if state == pybreaker.STATE_OPEN else "0",
            "opened_at": now_ms,
        })
        pipe.delete(BREAKER_WINDOW.format(name=name), BREAKER_PROBE.format(name=name))
        pipe.sadd(BREAKER_NAMES, name)
        pipe.execute()
        return old

    def status(self, name: str, policy: BreakerPolicy) -> BreakerStatus:
        raw = {k.decode(): v.decode()
               for k, v in self.client.hgetall(BREAKER.format(name=name)).items()}
        window = self.client.lrange(BREAKER_WINDOW.format(name=name), 0, -1)
        state = raw.get("state", pybreaker.STATE_CLOSED)
        forced = raw.get("forced") == "1"
        next_probe: float | None = None
        if state != pybreaker.STATE_CLOSED and not forced:
            seconds, micros = self.client.time()
            now_ms = int(seconds) * 1000 + int(micros) // 1000
            due = int(raw.get("opened_at", "0")) + int(policy.reset_timeout * 1000)
            next_probe = max(0.0, (due - now_ms) / 1000)
        return BreakerStatus(name, state, forced, sum(1 for v in window if v == b"1"),
                             len(window), next_probe)

    def is_open(self, name: str) -> bool:
        return bool(self.client.hget(BREAKER.format(name=name), "state") == b"open")

    def report(self, name: str, old: str, new: str, detail: str) -> None:
        event = f"{time.time():.3f}|{name}|{old}|{new}|{detail}"
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(BREAKER_EVENTS, event)
        pipe.ltrim(BREAKER_EVENTS, 0, BREAKER_EVENTS_KEPT - 1)
        pipe.execute()
        count(self.client, f"breaker_transitions:{name}:{new}")

    def names(self) -> list[str]:
        return sorted(m.decode() for m in self.client.smembers(BREAKER_NAMES))

    def events(self, limit: int = 20) -> list[str]:
        return [e.decode() for e in self.client.lrange(BREAKER_EVENTS, 0, limit - 1)]

    def storage(self, name: str) -> pybreaker.CircuitBreakerStorage:
        return RedisBreakerStorage(self.client, name)
