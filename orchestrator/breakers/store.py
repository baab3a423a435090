"""Where a breaker's fleet-wide state lives: the interface, and what its operations answer.

A :class:`BreakerStore` holds, per breaker name, its state (``closed``, ``open``,
``half-open``), whether an operator forced it, when it opened, the outcome window (newest
first, ``window`` long) and the half-open probe lease. Every rule of the breaker is
applied inside the store, atomically, so every process sharing the store sees one breaker:

- closed: every call goes through; each outcome enters the window; a failure that leaves
  at least ``min_calls`` outcomes with a failed share of ``threshold`` or more opens it
  (and empties the window);
- open: calls are refused until ``reset_timeout`` after it opened; then exactly one
  caller (the holder of the probe lease, for at most ``probe_timeout``) goes through and
  the breaker is half-open;
- half-open: the probe's success closes it, its failure opens it again; outcomes of
  calls that were not the probe change nothing;
- forced open: refused until forced closed, no probe ever.

Implementations: :class:`~orchestrator.breakers.redis_store.RedisBreakerStore` (Lua on
Redis, the fleet's) and :class:`~orchestrator.breakers.memory_store.MemoryBreakerStore`
(one process, for tests).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

import pybreaker

from orchestrator.breakers.policy import BreakerPolicy, BreakerStatus


class Decision(enum.Enum):
    CLOSED = "closed"
    PROBE = "probe"
    OPEN = "open"


@dataclass(frozen=True)
class Admit:
    """May a call go through. ``half_opened``: this call moved the breaker to half-open.
    ``wait_ms``: when refused, ms until a probe may go (-1: forced open)."""

    decision: Decision
    half_opened: bool = False
    wait_ms: int = 0


@dataclass(frozen=True)
class Outcome:
    """What recording one outcome did: ``transition`` is ``"open"`` or ``"closed"`` when
    it moved the breaker there, else ``""``; ``failures`` of the last ``calls``."""

    transition: str
    failures: int
    calls: int


class BreakerStore(Protocol):
    """Fleet-wide breaker state, by breaker name."""

    def admit(self, name: str, policy: BreakerPolicy, owner: str) -> Admit:
        """Decide one call, taking the probe lease for ``owner`` when it is the probe."""
        ...

    def record(self, name: str, policy: BreakerPolicy, *, ok: bool, probe: bool,
               owner: str) -> Outcome:
        """Count one call's outcome (``probe``: the call was admitted as the probe)."""
        ...

    def force(self, name: str, state: str) -> str:
        """Set ``state`` (``open``: forced, ``closed``), reset the window and the probe;
        returns the state it had before."""
        ...

    def status(self, name: str, policy: BreakerPolicy) -> BreakerStatus: ...

    def is_open(self, name: str) -> bool: ...

    def report(self, name: str, old: str, new: str, detail: str) -> None:
        """Keep a transition in the fleet's event list and count it."""
        ...

    def names(self) -> list[str]:
        """Every breaker name a call or an operator has used, sorted."""
        ...

    def events(self, limit: int = 20) -> list[str]:
        """The latest transitions, newest first: ``time|name|old|new|detail``."""
        ...

    def storage(self, name: str) -> pybreaker.CircuitBreakerStorage:
        """pybreaker's view of the breaker (for pybreaker-aware code and listeners)."""
        ...
