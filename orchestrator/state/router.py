"""Which backend serves a key: write-back for the configured prefixes, else durable."""

from __future__ import annotations

from typing import Any

from orchestrator.errors import VersionConflict
from orchestrator.state.durable import DurableState
from orchestrator.state.record import Basis, Record
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

    def get(self, key: str) -> Record | None:
        if self._write_back(key):
            assert self.writeback is not None
            return self.writeback.get(key)
        return self.durable.get(key)

    def put(self, key: str, value: dict[str, Any], *, expected_version: int,
            value_json: str) -> Record:
        if self._write_back(key):
            assert self.writeback is not None
            return self.writeback.put(key, value, expected_version=expected_version,
                                      value_json=value_json)
        return self.durable.put(key, value, expected_version=expected_version)

    def basis(self, key: str) -> tuple[Basis, bool]:
        """An update's first basis and whether it was just read (see
        :meth:`WriteBackState.basis`; durable records are always read)."""
        if self._write_back(key):
            assert self.writeback is not None
            return self.writeback.basis(key)
        return Basis.of(self.durable.get(key)), True

    def attempt(self, key: str, basis: Basis, value: dict[str, Any], value_json: str, *,
                remembered: bool = False) -> Record | Basis:
        """One compare-and-set of an update: the written record, or the current basis
        (see :meth:`WriteBackState.attempt`; a durable conflict reads the row)."""
        if self._write_back(key):
            assert self.writeback is not None
            return self.writeback.attempt(key, basis, value, value_json,
                                          remembered=remembered)
        try:
            return self.durable.put(key, value, expected_version=basis.version)
        except VersionConflict:
            return Basis.of(self.durable.get(key))
