"""Functions run in separate processes by the state tests (importable by spawn)."""

from __future__ import annotations

import os
from typing import Any

from config import Settings


def hammer(settings_json: str, key: str, count: int, tag: str) -> int:
    """``count`` updates of ``key`` from this process: +1 and append a unique id.
    Returns this process's lost compare-and-set races."""
    import orchestrator
    from orchestrator import state, subsystems

    orchestrator.configure(Settings.model_validate_json(settings_json))

    def add(i: int) -> Any:
        def fn(value: dict[str, Any]) -> dict[str, Any]:
            return {"count": int(value.get("count", 0)) + 1,
                    "ids": [*value.get("ids", []), f"{tag}-{os.getpid()}-{i}"]}
        return fn

    for i in range(count):
        state.update(key, add(i))
    return subsystems.current().state.conflicts


def hammer_keys(settings_json: str, keys: list[str], count: int, tag: str,
                seed: int) -> tuple[int, int, int]:
    """``count`` updates of keys drawn at random from ``keys`` (+1 and a unique id each),
    from this process, whose remembered records go stale as the others write. Returns
    (lost races, remembered records found stale, records remembered at the end)."""
    import random

    import orchestrator
    from orchestrator import state, subsystems

    orchestrator.configure(Settings.model_validate_json(settings_json))
    rng = random.Random(seed)

    def add(ticket: str) -> Any:
        def fn(value: dict[str, Any]) -> dict[str, Any]:
            return {"count": int(value.get("count", 0)) + 1,
                    "ids": [*value.get("ids", []), ticket]}
        return fn

    for i in range(count):
        state.update(rng.choice(keys), add(f"{tag}-{os.getpid()}-{i}"))
    api = subsystems.current().state
    assert api.router.writeback is not None
    return api.conflicts, api.stale_bases, len(api.router.writeback.cache)
