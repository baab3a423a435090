"""The state contract of DESIGN.md: ``get``, ``update`` and ``put``."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from orchestrator import runtime
from orchestrator.errors import VersionConflict
from orchestrator.state.durable import DurableState
from orchestrator.state.record import Record, check_key, check_value

MAX_ATTEMPTS = 64


def _backend() -> DurableState:
    return DurableState(runtime.current().engine)


def get(key: str) -> Record | None:
    """The record at ``key``, or None if never written."""
    return _backend().get(check_key(key))


def put(key: str, value: dict[str, Any], *, expected_version: int) -> Record:
    """Write ``value`` at ``key`` if its version is ``expected_version`` (0: absent).

    Raises ``VersionConflict`` when another write got there first, ``InvalidPayload``
    for an empty key or a value that is not a JSON object.
    """
    check_key(key)
    check_value(value)
    return _backend().put(key, value, expected_version=expected_version)


def update(key: str, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Record:
    """Read, apply ``fn(value) -> value``, compare-and-set; on conflict re-read and re-apply.

    ``fn`` gets ``{}`` for a new key and may run more than once, so it must be pure.
    Raises ``VersionConflict`` after ``MAX_ATTEMPTS`` lost races (jittered backoff between).
    """
    check_key(key)
    backend = _backend()
    for attempt in range(MAX_ATTEMPTS):
        current = backend.get(key)
        version = 0 if current is None else current.version
        value = fn(dict(current.value) if current else {})
        check_value(value)
        try:
            return backend.put(key, value, expected_version=version)
        except VersionConflict:
            time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
    raise VersionConflict(f"state {key!r}: gave up after {MAX_ATTEMPTS} conflicting attempts")
