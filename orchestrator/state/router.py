"""Which backend serves a key: write-back for the configured prefixes, else durable."""

from __future__ import annotations

from typing import Any

from orchestrator.state.durable import DurableState
from orchestrator.state.record import Record
from orchestrator.state.writeback import WriteBackState


class StateRouter:
    def __init__(self, durable: DurableState, writeback: WriteBackState | None,
                 prefixes: list[str]) -> None:
        self.durable = durable
        self.writeback = writeback
        self.prefixes = tuple(prefixes)

    def _write_back(self, key: str) -> bool:
        return self.writeback is not None and key.startswith(self.prefixes)

    def mode(self, key: str) -> str:
        return "write-back" if self._write_back(key) else "durable"

    def get(self, key: str, *, checked: bool = True) -> Record | None:
        """``checked=False``: see :meth:`WriteBackState.get` (durable reads are always
        PostgreSQL's)."""
        if self._write_back(key):
            assert self.writeback is not None
            return self.writeback.get(key, checked=checked)
        return self.durable.get(key)

    def put(self, key: str, value: dict[str, Any], *, expected_version: int,
            value_json: str, checked: bool = True) -> Record:
        """``checked=False``: see :meth:`WriteBackState.put`."""
        if self._write_back(key):
            assert self.writeback is not None
            return self.writeback.put(key, value, expected_version=expected_version,
                                      value_json=value_json, checked=checked)
        return self.durable.put(key, value, expected_version=expected_version)
