"""Durable state: one PostgreSQL row per key, guarded by its version column
(the queries are :class:`orchestrator.store.state_rows.StateRows`)."""

from __future__ import annotations

from typing import Any

from orchestrator.state.record import Record
from orchestrator.store.state_rows import StateRows


class DurableState:
    """State records in PostgreSQL."""

    def __init__(self, rows: StateRows) -> None:
        self.rows = rows

    def get(self, key: str) -> Record | None:
        found = self.rows.get(key)
        return None if found is None else Record(*found)

    def put(self, key: str, value: dict[str, Any], *, expected_version: int) -> Record:
        """Write ``value`` if the stored version is ``expected_version`` (0: absent);
        raises ``VersionConflict`` otherwise."""
        return Record(*self.rows.put(key, value, expected_version=expected_version))
