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
from orchestrator.telemetry import SampleBuffer

# Retries are bounded by time, not count: on a hot key a writer may lose many races in a
# row, and every loss means someone else's write went in.
UPDATE_DEADLINE_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 0.1


class StateAPI:
    """``get``, ``update`` and ``put`` over one process's state router; lost races are
    counted (this process's total, and the fleet counter in ``telemetry``), and so are
    remembered records found stale (``stale_bases``, this process only)."""

    def __init__(self, router: StateRouter, *, telemetry: redis.Redis | None) -> None:
        self.router = router
        self.telemetry = telemetry
        self.latencies = None if telemetry is None else SampleBuffer(telemetry)
        self.conflicts = 0
        self.stale_bases = 0
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
        """Read, apply ``fn(value) -> value``, compare-and-set; on conflict re-apply.

        ``fn`` gets ``{}`` for a new key, a copy of its own each call, and may run more
        than once, so it must be pure. The compare-and-set goes in only if the record
        still holds the version *and* value ``fn`` was applied to; a refusal brings the
        current record back with it, and ``fn`` is re-applied to that (no read). A
        write-back record this process wrote or saw last is not read first at all
        while remembered records mostly prove current: ``fn`` is applied to it as
        remembered, and if another writer got in since, the refusal brings the
        current one (see :mod:`orchestrator.state.cache`).
        A write-back record that a Redis restart, restore or failover brought back older
        than PostgreSQL's row is replaced by it at the compare-and-set, which then
        loses, and ``fn`` is re-applied to PostgreSQL's: no increment that reached
        PostgreSQL is lost.
        A race lost on a record just read (another write went in between) is counted
        in ``conflicts`` and retried on the record the refusal brought: the first at
        once (on a wide key space two writers rarely meet twice), the next ones after a
        jittered exponential backoff (a hot key); a refusal of a record remembered, or
        brought before that backoff, is counted in ``stale_bases`` and retried at once. Raises
        ``VersionConflict`` if the write has not gone in after
        ``UPDATE_DEADLINE_SECONDS``.
        """
        check_key(key)
        backend = self.router
        started = time.perf_counter()
        deadline = time.monotonic() + UPDATE_DEADLINE_SECONDS
        basis, fresh = backend.basis(key)
        remembered = not fresh
        races = 0
        while True:
            value = fn(basis.value())
            text = check_value(value)
            outcome = backend.attempt(key, basis, value, text, remembered=remembered)
            remembered = False
            if isinstance(outcome, Record):
                if self.latencies is not None:
                    self.latencies.add(f"state_update:{backend.mode(key)}",
                                       time.perf_counter() - started)
                return outcome
            basis = outcome
            if not fresh:
                self.stale_bases += 1
                fresh = True
                continue
            races += 1
            self._conflict(backend.mode(key))
            if time.monotonic() >= deadline:
                break
            if races == 1:
                continue  # the refusal brought the record as of now: at once, once
            time.sleep(random.uniform(
                0, min(MAX_BACKOFF_SECONDS, 0.001 * 2 ** min(races - 1, 10))))
            fresh = False  # other writes may have gone in while this one waited
        raise VersionConflict(
            f"state {key!r}: gave up after {races} conflicting attempts in "
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
