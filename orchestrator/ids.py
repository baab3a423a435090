"""Invocation ids: UUIDs of version 7 (RFC 9562), in their 36-character text form.

A version 7 UUID starts with its creation time in milliseconds, so ids made later sort
later, as text too. The invocation and step tables are keyed on the id: with random
(version 4) ids every new row lands on a random page of those indexes, and the exporter's
per-invocation step lookups for the last minutes visit pages spread over the whole
history, which grows with it. Time-ordered ids keep the recent rows together at the
right edge of each index, whatever the history holds (``scripts/bench_scale.py``).

The remaining 74 bits are random, so ids stay unguessable and unique across machines;
ids made within one millisecond sort among themselves at random (nothing relies on
their order beyond the millisecond).
"""

from __future__ import annotations

import os
import time
import uuid

_TIME_MASK = (1 << 48) - 1


def uuid7(unix_ms: int | None = None) -> uuid.UUID:
    """A version 7 UUID for ``unix_ms`` (now when omitted)."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits; 74 are used
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)
    value = (ms & _TIME_MASK) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


def new_invocation_id() -> str:
    """A new invocation's id: a version 7 UUID as text."""
    return str(uuid7())
