"""Providers' rate-limit headers, whatever their dialect, read as budgets.

Three families are read (names compared in lower case):
- OpenAI: ``x-ratelimit-remaining-requests``, ``x-ratelimit-reset-requests`` (a duration
  such as ``"6m0s"``, ``"1s"``, ``"250ms"``), and the same for ``-tokens``;
- Anthropic: ``anthropic-ratelimit-requests-remaining``, ``...-requests-reset`` (an RFC
  3339 time), and the same for ``tokens``, ``input-tokens`` and ``output-tokens``;
- gateways' per-scope names: ``x-ratelimit-<scope>-remaining-requests`` and
  ``x-ratelimit-<scope>-reset-requests`` (any scope: ``minute``, ``key``, ``org``...).
A reset is read as a duration, a number of seconds, an RFC 3339 time or epoch seconds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?"
                       r"(?:(\d+(?:\.\d+)?)ms)?$")
_OPENAI = re.compile(r"^x-ratelimit-(remaining|reset)-(requests|tokens)$")
_SCOPED = re.compile(r"^x-ratelimit-([a-z0-9_.]+(?:-[a-z0-9_.]+)*?)-(remaining|reset)-"
                     r"(requests|tokens)$")
_ANTHROPIC = re.compile(r"^anthropic-ratelimit-(requests|tokens|input-tokens|output-tokens)-"
                        r"(remaining|reset)$")
# Past this, a bare number is a point in time (epoch seconds), not a duration.
_EPOCH_FLOOR = 1_000_000_000.0


@dataclass(frozen=True)
class Budget:
    """One budget a provider reported: ``kind`` is ``requests`` or ``tokens``; ``reset``
    in seconds from now (None: not said); ``scope`` names the family (``openai``,
    ``anthropic``, or the gateway's scope)."""

    scope: str
    kind: str
    remaining: int | None
    reset: float | None

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


def parse_reset(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds until ``value``: OpenAI's durations (``"1s"``, ``"6m0s"``, ``"250ms"``), a
    number of seconds, epoch seconds, or an RFC 3339 time (Anthropic). ``now``: epoch
    seconds (default: this machine's clock). None when unreadable; never negative."""
    if not value:
        return None
    text = value.strip()
    if not text:
        return None
    clock = time.time() if now is None else now
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, number - clock) if number >= _EPOCH_FLOOR else max(0.0, number)
    match = _DURATION.match(text)
    if match and any(match.groups()):
        hours, minutes, seconds, millis = (float(g) if g else 0.0 for g in match.groups())
        return hours * 3600 + minutes * 60 + seconds + millis / 1000
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - clock)


def _remaining(value: str) -> int | None:
    text = value.strip()
    return int(text) if text.isdigit() else None


def read_budgets(headers: Mapping[str, str], *, now: float | None = None) -> list[Budget]:
    """Every budget the headers state, in the order (scope, kind) first appears."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for name, value in headers.items():
        lower = name.lower()
        if match := _OPENAI.match(lower):
            field, kind, scope = match.group(1), match.group(2), "openai"
        elif match := _ANTHROPIC.match(lower):
            kind = "requests" if match.group(1) == "requests" else match.group(1)
            field, scope = match.group(2), "anthropic"
        elif match := _SCOPED.match(lower):
            scope, field, kind = match.groups()
        else:
            continue
        found.setdefault((scope, kind), {})[field] = value
    budgets = []
    for (scope, kind), fields in found.items():
        budgets.append(Budget(
            scope, "requests" if kind == "requests" else "tokens",
            _remaining(fields["remaining"]) if "remaining" in fields else None,
            parse_reset(fields.get("reset"), now=now)))
    return budgets


def exhausted_reset(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds until the last exhausted budget that says when it resets frees (None: no
    budget at zero says when)."""
    resets = [b.reset for b in read_budgets(headers, now=now)
              if b.exhausted and b.reset is not None]
    return max(resets) if resets else None
