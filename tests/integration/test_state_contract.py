"""The agent-state contract of DESIGN.md, run on each mode.

One class of behaviours, :class:`StateContract`, subclassed per mode as saq's queue tests
are per backend: ``durable`` (PostgreSQL rows) and ``write-back`` (Redis shards flushed to
PostgreSQL, chosen by the ``customer:`` key prefix). Every behaviour a producer or a step
relies on holds in both.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from config import Settings
from orchestrator import state, subsystems
from orchestrator.errors import VersionConflict


class StateContract:
    """Behaviours of ``orchestrator.state`` that hold in every mode."""

    prefix: str
    mode: str

    def key(self) -> str:
        return f"{self.prefix}:{uuid.uuid4().hex[:8]}"

    def test_keys_of_this_prefix_are_served_by_this_mode(self, settings: Settings) -> None:
        assert subsystems.current().state.router.mode(self.key()) == self.mode

    def test_get_of_a_key_never_written_is_none(self, settings: Settings) -> None:
        assert state.get(self.key()) is None

    def test_put_expecting_version_zero_creates_the_record_at_version_one(
        self, settings: Settings
    ) -> None:
        key = self.key()
        created = state.put(key, {"tickets": 0}, expected_version=0)
        assert (created.key, created.value, created.version) == (key, {"tickets": 0}, 1)
        assert state.get(key) == created

    def test_put_expecting_a_version_of_a_missing_key_is_refused(
        self, settings: Settings
    ) -> None:
        key = self.key()
        with pytest.raises(VersionConflict):
            state.put(key, {"n": 1}, expected_version=3)
        assert state.get(key) is None

    def test_stale_write_is_refused(self, settings: Settings) -> None:
        key = f"{self.prefix}:{uuid.uuid4().hex[:8]}"
        first = state.put(key, {"n": 1}, expected_version=0)
        second = state.put(key, {"n": 2}, expected_version=first.version)
        with pytest.raises(VersionConflict):
            state.put(key, {"n": 3}, expected_version=first.version)
        with pytest.raises(VersionConflict):
            state.put(key, {"n": 3}, expected_version=0)
        current = state.get(key)
        assert current is not None and current.value == {"n": 2}
        assert current.version == second.version

    def test_each_write_adds_one_to_the_version(self, settings: Settings) -> None:
        key = self.key()
        record = state.put(key, {"n": 0}, expected_version=0)
        for n in range(1, 4):
            record = state.put(key, {"n": n}, expected_version=record.version)
        assert (record.version, record.value) == (4, {"n": 3})

    def test_values_come_back_as_written(self, settings: Settings) -> None:
        key = self.key()
        value: dict[str, Any] = {"name": "Zoë ☕", "ids": ["T-1", "T-2"], "n": 2.5,
                                 "nested": {"flag": True, "none": None}}
        state.put(key, value, expected_version=0)
        found = state.get(key)
        assert found is not None and found.value == value

    def test_update_of_a_new_key_starts_from_an_empty_object(self, settings: Settings) -> None:
        key = self.key()
        seen: list[dict[str, Any]] = []

        def count(value: dict[str, Any]) -> dict[str, Any]:
            seen.append(dict(value))
            return {**value, "tickets_handled": value.get("tickets_handled", 0) + 1}

        record = state.update(key, count)
        assert seen == [{}]
        assert (record.value, record.version) == ({"tickets_handled": 1}, 1)

    def test_update_reapplies_its_function_after_a_conflict(self, settings: Settings) -> None:
        key = self.key()
        state.put(key, {"ticket_ids": ["T-1"]}, expected_version=0)
        seen: list[list[str]] = []

        def add_ticket(value: dict[str, Any]) -> dict[str, Any]:
            seen.append(list(value["ticket_ids"]))
            if len(seen) == 1:  # another writer gets in between our read and our write
                state.put(key, {"ticket_ids": ["T-1", "T-2"]}, expected_version=1)
            return {"ticket_ids": [*value["ticket_ids"], "T-3"]}

        conflicts = subsystems.current().state.conflicts
        record = state.update(key, add_ticket)
        assert seen == [["T-1"], ["T-1", "T-2"]]
        assert (record.value, record.version) == ({"ticket_ids": ["T-1", "T-2", "T-3"]}, 3)
        assert subsystems.current().state.conflicts == conflicts + 1
        assert state.get(key) == record


class TestDurableState(StateContract):
    prefix = "durable"
    mode = "durable"


class TestWriteBackState(StateContract):
    prefix = "customer"
    mode = "write-back"
