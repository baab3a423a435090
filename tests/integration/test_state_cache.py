"""The write-back records ``update`` remembers never cost an update.

A process applies ``fn`` to the record it wrote last instead of reading it first; these
tests make that remembered record stale every way it can be (another process wrote, the
value changed under the same version, the record left Redis) and check that every
increment lands, applied to the current value.
"""

from __future__ import annotations

import multiprocessing
import uuid
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from config import Settings
from orchestrator import runtime, state, subsystems
from orchestrator.constants import STATE_RECORD
from orchestrator.state.api import StateAPI
from orchestrator.state.durable import DurableState
from orchestrator.state.record import Basis
from orchestrator.state.router import StateRouter
from orchestrator.state.writeback import WriteBackState
from tests.state_workers import hammer_keys


def _key() -> str:
    return f"customer:{uuid.uuid4().hex[:8]}"


def _other_process(settings: Settings) -> StateAPI:
    """A second state API on the same Redis and PostgreSQL with a cache of its own: what
    another worker process holds."""
    durable = DurableState(subsystems.current().state_rows)
    writeback = WriteBackState(runtime.current().state_shards, durable,
                               dirty_limit=settings.state_dirty_limit)
    return StateAPI(StateRouter(durable, writeback, settings.state_write_back_prefixes),
                    telemetry=None)


def _append(ticket: str, seen: list[dict[str, Any]]) -> Any:
    def fn(value: dict[str, Any]) -> dict[str, Any]:
        seen.append(value)
        return {"count": int(value.get("count", 0)) + 1,
                "ids": [*value.get("ids", []), ticket]}
    return fn


def test_update_from_a_stale_remembered_record_lands_on_the_current_one(
    settings: Settings,
) -> None:
    key = _key()
    mine, theirs = subsystems.current().state, _other_process(settings)
    state.update(key, _append("a1", []))
    theirs.update(key, _append("b1", []))  # my remembered record is now stale
    theirs.update(key, _append("b2", []))
    seen: list[dict[str, Any]] = []
    stale = mine.stale_bases
    record = mine.update(key, _append("a2", seen))
    # fn ran on the remembered record, was refused, and ran again on the current one
    assert [v["ids"] for v in seen] == [["a1"], ["a1", "b1", "b2"]]
    assert mine.stale_bases == stale + 1
    assert record.version == 4 and record.value == {"count": 4,
                                                     "ids": ["a1", "b1", "b2", "a2"]}
    assert state.get(key) == record


def test_update_from_a_fresh_remembered_record_needs_no_read(settings: Settings) -> None:
    key = _key()
    api = subsystems.current().state
    state.update(key, _append("a1", []))
    shard = runtime.current().state_shards[0]
    before = shard.client.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0)
    seen: list[dict[str, Any]] = []
    stale = api.stale_bases
    record = state.update(key, _append("a2", seen))
    after = shard.client.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0)
    assert seen == [{"count": 1, "ids": ["a1"]}] and api.stale_bases == stale
    assert after - before == 1  # the compare-and-set script's own, no read before it
    assert record.value == {"count": 2, "ids": ["a1", "a2"]}


def test_a_value_changed_under_the_same_version_is_not_written_over(
    settings: Settings,
) -> None:
    # What a reconciliation with a second history does: PostgreSQL's value replaces the
    # cached one at the same version. A version-only check would let a remembered
    # record's write go in and drop that value.
    key = _key()
    record = state.update(key, _append("a1", []))
    shard = runtime.current().state_shards[0]
    shard.client.hset(STATE_RECORD.format(key=key), "v", '{"count":1,"ids":["pg"]}')
    seen: list[dict[str, Any]] = []
    updated = state.update(key, _append("a2", seen))
    assert [v["ids"] for v in seen] == [["a1"], ["pg"]]
    assert updated.version == record.version + 1
    assert updated.value == {"count": 2, "ids": ["pg", "a2"]}


def test_a_remembered_record_that_left_redis_is_reloaded_not_trusted(
    settings: Settings,
) -> None:
    key = _key()
    state.update(key, _append("a1", []))
    durable = DurableState(subsystems.current().state_rows)
    durable.put(key, {"count": 5, "ids": ["x"]}, expected_version=0)  # PostgreSQL's row
    runtime.current().state_shards[0].client.delete(STATE_RECORD.format(key=key))
    seen: list[dict[str, Any]] = []
    updated = state.update(key, _append("a2", seen))
    assert [v["ids"] for v in seen] == [["a1"], ["x"]]
    assert (updated.version, updated.value) == (2, {"count": 6, "ids": ["x", "a2"]})


def test_remembered_records_are_kept_within_their_budget() -> None:
    from orchestrator.state.cache import RecordCache

    cache = RecordCache(budget_bytes=100, max_record_bytes=40)
    for i in range(10):
        cache.put(f"k{i}", Basis(i, "x" * 30))
    assert cache.size <= 100 and len(cache) == 3
    assert cache.get("k9") == Basis(9, "x" * 30) and cache.get("k0") is None
    cache.put("k9", Basis(10, "y" * 41))  # too large to keep: forgotten, not kept stale
    assert cache.get("k9") is None


PROCESSES = 4
UPDATES = 300
KEYS = 3


@pytest.mark.timeout(300)
def test_processes_with_stale_remembered_records_lose_no_increment(
    settings: Settings,
) -> None:
    keys = [_key() for _ in range(KEYS)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        futures = [pool.submit(hammer_keys, settings.model_dump_json(), keys, UPDATES,
                               f"p{i}", i) for i in range(PROCESSES)]
        results = [f.result(timeout=240) for f in futures]
    assert sum(stale for _, stale, _ in results) > 0  # the caches did go stale
    assert all(remembered == KEYS for _, _, remembered in results)
    ids: list[str] = []
    for key in keys:
        record = state.get(key)
        assert record is not None
        assert record.version == record.value["count"] == len(record.value["ids"])
        ids += record.value["ids"]
    assert len(ids) == len(set(ids)) == PROCESSES * UPDATES
