"""The state contract of DESIGN.md: ``get``, ``update`` and ``put``."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import redis

from orchestrator import telemetry
from orchestrator.errors import VersionConflict
from orchestrator.state.record import Record, check_key, check_value
from orchestrator.state.router import StateRouter

# Retries are bounded by time, not count: on a hot key a writer may lose many races in a
# row, and every loss means someone else's write went in.
UPDATE_DEADLINE_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 0.1


class StateAPI:
    """``get``, ``update`` and ``put`` over one process's state router; lost races are
    counted (this process's total, and the fleet counter in ``telemetry``)."""

    def __init__(self, router: StateRouter, *, telemetry: redis.Redis | None) -> None:
        self.router = router
        self.telemetry = telemetry
        self.conflicts = 0
        if router.writeback is not None and router.writeback.telemetry is None:
            router.writeback.telemetry = telemetry  # reconciliations, counted fleet-wide

    def _conflict(self, mode: str) -> None:
        self.conflicts += 1
        if self.telemetry is not None:
            telemetry.count(self.telemetry, f"state_conflicts:{mode}")

    def get(self, key: str) -> Record | None:
        """The record at ``key``, or None if never written."""
        return self.router.get(check_key(key))

    def put(self, key: str, value: dict[str, Any], *, expected_version: int) -> Record:
        """Write ``value`` at ``key`` if its version is ``expected_version`` (0: absent).

        Raises ``VersionConflict`` when another write got there first, ``InvalidPayload``
        for an empty key or a value that is not a JSON object.
        """
        check_key(key)
        text = check_value(value)
        return self.router.put(key, value, expected_version=expected_version, value_json=text)

    def update(self, key: str, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Record:
        """Read, apply ``fn(value) -> value``, compare-and-set; on conflict re-read and
        re-apply.

        ``fn`` gets ``{}`` for a new key and may run more than once, so it must be pure.
        A write-back record that a Redis restart, restore or failover brought back older
        than PostgreSQL's row is replaced by it at the compare-and-set, which then
        loses, and ``fn`` is re-applied to PostgreSQL's: no increment that reached
        PostgreSQL is lost.
        Lost races are retried with jittered exponential backoff; raises
        ``VersionConflict`` if the write has not gone in after ``UPDATE_DEADLINE_SECONDS``.
        """
        check_key(key)
        backend = self.router
        mode = backend.mode(key)
        started = time.perf_counter()
        deadline = time.monotonic() + UPDATE_DEADLINE_SECONDS
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            # Unchecked: put checks the record's epoch, so a stale read only loses.
            current = backend.get(key, checked=False)
            version = 0 if current is None else current.version
            value = fn(dict(current.value) if current else {})
            text = check_value(value)
            try:
                record = backend.put(key, value, expected_version=version, value_json=text,
                                     checked=False)
            except VersionConflict:
                self._conflict(mode)
                time.sleep(random.uniform(
                    0, min(MAX_BACKOFF_SECONDS, 0.001 * 2 ** min(attempt, 10))))
                continue
            if self.telemetry is not None:
                telemetry.sample(self.telemetry, f"state_update:{mode}",
                                 time.perf_counter() - started)
            return record
        raise VersionConflict(
            f"state {key!r}: gave up after {attempt} conflicting attempts in "
            f"{UPDATE_DEADLINE_SECONDS:.0f}s")


def _api() -> StateAPI:
    from orchestrator import subsystems

    return subsystems.current().state


def get(key: str) -> Record | None:
    """The record at ``key``, or None if never written (see :meth:`StateAPI.get`)."""
    return _api().get(key)


def put(key: str, value: dict[str, Any], *, expected_version: int) -> Record:
    """Compare-and-set ``value`` at ``key`` (see :meth:`StateAPI.put`)."""
    return _api().put(key, value, expected_version=expected_version)


def update(key: str, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Record:
    """Read, apply ``fn``, compare-and-set, re-apply on conflict (see
    :meth:`StateAPI.update`)."""
    return _api().update(key, fn)
