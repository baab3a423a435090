"""Which API keys are in rotation: keys the provider refused, their cool-off and probe.

A 401/403 takes a key out of rotation for a cool-off (``ORCH_LLM_KEY_COOLOFF``), fleet-wide.
When the cool-off ends, exactly one call in the fleet probes the key (a lease in the
limiter): an answer brings it back, another 401/403 sends it back for twice as long (up
to :data:`~orchestrator.constants.LLM_KEY_COOLOFF_CAP_SECONDS`). Refusals by calls that
were already in flight when the key went out belong to the same incident and change
nothing. ``orchestrator keys restore`` brings a key back at once.

Keys are named by fingerprint only, here and in every message built here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from orchestrator.constants import LLM_KEY_COOLOFF_CAP_SECONDS
from orchestrator.errors import OrchestratorError, ProviderOutage

if TYPE_CHECKING:
    from orchestrator.llm.limiter import Limiter


def cooloff_seconds(base: float, strikes: int) -> float:
    """How long a key refused ``strikes`` times in a row stays out: ``base``, doubled per
    refused probe, never over the cap (nor under ``base``)."""
    return min(base * 2 ** max(0, strikes - 1), max(base, LLM_KEY_COOLOFF_CAP_SECONDS))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class KeyOut:
    """A key out of rotation: the provider's ``status`` (401/403), when it first and last
    refused (ms since the epoch), when the next probe may go, refusals in a row."""

    status: int
    first_ms: int
    last_ms: int
    probe_at_ms: int
    strikes: int

    def encode(self) -> str:
        """The form kept in Redis (``lua/limiter_take_out.lua`` writes the same)."""
        return f"{self.status}|{self.first_ms}|{self.last_ms}|{self.probe_at_ms}|{self.strikes}"

    @classmethod
    def decode(cls, text: str | bytes) -> KeyOut:
        raw = text.decode() if isinstance(text, bytes) else text
        status, first, last, probe_at, strikes = (int(part) for part in raw.split("|"))
        return cls(status, first, last, probe_at, strikes)

    @property
    def last_at(self) -> str:
        """When the key was last refused, ISO 8601 UTC."""
        return _iso(self.last_ms)

    def next_probe_in(self, now_ms: int) -> float:
        """Seconds until the cool-off ends (0: a probe may go now)."""
        return max(0, self.probe_at_ms - now_ms) / 1000

    def describe(self, key_id: str, now_ms: int) -> str:
        """``k-... refused with HTTP 401 at <UTC> (...), next probe in 12s``: no secret."""
        history = (f"{self.strikes} refusals in a row since {_iso(self.first_ms)}"
                   if self.strikes > 1 else "out since then")
        wait = self.next_probe_in(now_ms)
        probe = f"next probe in {wait:.0f}s" if wait > 0 else "probe due"
        return (f"{key_id} refused with HTTP {self.status} at {self.last_at} "
                f"({history}; {probe})")


class NoUsableKey(ProviderOutage):
    """Every key of a provider is out of rotation and none may be probed yet.

    An outage, not a failure: the gateway asks the next provider, and an LLM step holds
    (``ORCH_LLM_OUTAGE_HOLD``) until a probe may go (``retry_after``)."""

    def __init__(self, provider: str, out: Mapping[str, KeyOut], now_ms: int) -> None:
        waits = [o.next_probe_in(now_ms) for o in out.values()]
        described = "; ".join(o.describe(key_id, now_ms) for key_id, o in sorted(out.items()))
        super().__init__(f"LLM provider {provider}: no usable API key ({described})",
                         retry_after=max(0.5, min(waits, default=1.0)))
        self.provider = provider
        self.out = dict(out)


class UnknownKey(OrchestratorError):
    """No configured provider has an API key with this fingerprint."""


class KeyState(enum.Enum):
    USABLE = "usable"
    COOLING = "cooling"  # a 429 or an exhausted x-ratelimit budget: back by itself
    OUT = "out"  # refused with 401/403: cooling off until one call probes it
    PROBING = "probing"  # one call is trying it now


@dataclass(frozen=True)
class KeyStatus:
    """One key of one provider right now, by fingerprint: its state and its headroom in
    the rolling minute."""

    provider: str
    key: str
    state: KeyState
    cooling_s: float  # seconds of a 429 cooldown left
    out: KeyOut | None
    next_probe_in_s: float | None  # for keys out of rotation
    in_flight: int
    concurrency: int
    requests_left: int
    tokens_left: int

    def as_json(self) -> dict[str, Any]:
        refused = None
        if self.out is not None:
            refused = {"status": self.out.status, "at": self.out.last_at,
                       "first_at": _iso(self.out.first_ms), "strikes": self.out.strikes}
        return {"provider": self.provider, "key": self.key, "state": self.state.value,
                "cooling_s": self.cooling_s, "next_probe_in_s": self.next_probe_in_s,
                "refused": refused, "in_flight": self.in_flight,
                "concurrency": self.concurrency, "requests_left": self.requests_left,
                "tokens_left": self.tokens_left}


def key_state(out: KeyOut | None, *, probing: bool, cooling_ms: int) -> KeyState:
    """The state a key's records add up to (both limiters read theirs the same way)."""
    if out is not None:
        return KeyState.PROBING if probing else KeyState.OUT
    return KeyState.COOLING if cooling_ms > 0 else KeyState.USABLE


def key_statuses(limiters: Iterable[Limiter]) -> list[KeyStatus]:
    """Every key of every provider, by fingerprint (``orchestrator keys``)."""
    return [status for limiter in limiters for status in limiter.statuses()]


def restore_key(limiters: Iterable[Limiter], key_id: str) -> list[str]:
    """Return the key with fingerprint ``key_id`` to rotation at once, for every provider
    that has it; returns the providers where it was out (empty: it was in rotation).

    Raises ``UnknownKey`` when no provider has a key with that fingerprint.
    """
    every = list(limiters)
    found = [limiter for limiter in every
             if any(key.id == key_id for key in limiter.provider.keys)]
    if not found:
        known = sorted({key.id for limiter in every for key in limiter.provider.keys})
        raise UnknownKey(f"no API key has fingerprint {key_id!r} "
                         f"(known: {', '.join(known) or 'none'})")
    return [limiter.provider.name for limiter in found if limiter.restore(key_id)]
