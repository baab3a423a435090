"""Agent state: JSON records guarded by a version, updated by compare-and-set.

    record = orchestrator.state.update("customer:42", lambda v: {**v, "n": v.get("n", 0) + 1})

``update`` re-reads and re-applies ``fn`` when another writer got in first, so no
increment is ever lost; ``put(..., expected_version=)`` raises ``VersionConflict``.
"""

from orchestrator.state.api import Record, get, put, update

__all__ = ["Record", "get", "put", "update"]
