"""Agent state under concurrency: no lost update in durable or write-back mode."""

from __future__ import annotations

import multiprocessing
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

import orchestrator
from config import Settings
from orchestrator import runtime, state, subsystems
from orchestrator.devstack.processes import FlusherProcess
from orchestrator.errors import InvalidPayload
from orchestrator.state.durable import DurableState
from orchestrator.state.flusher import wait_until_clean
from tests.procs import wait_for
from tests.state_workers import hammer

PROCESSES = 8
UPDATES = 200


def _hammer_from(settings: Settings, key: str) -> int:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
        futures = [pool.submit(hammer, settings.model_dump_json(), key, UPDATES, f"p{i}")
                   for i in range(PROCESSES)]
        return sum(f.result(timeout=240) for f in futures)


def _check_exact(value: dict[str, object]) -> None:
    ids = value["ids"]
    assert isinstance(ids, list)
    assert value["count"] == PROCESSES * UPDATES
    assert len(ids) == len(set(ids)) == PROCESSES * UPDATES


@pytest.mark.timeout(300)
def test_hot_key_durable_mode_loses_no_update(settings: Settings) -> None:
    key = f"durable:{uuid.uuid4().hex[:8]}"  # no write-back prefix: PostgreSQL only
    assert subsystems.current().state.router.mode(key) == "durable"
    conflicts = _hammer_from(settings, key)
    record = state.get(key)
    assert record is not None
    _check_exact(record.value)
    assert record.version == PROCESSES * UPDATES
    assert conflicts > 0  # the races happened, and were retried


@pytest.mark.timeout(300)
def test_hot_key_write_back_mode_loses_no_update_and_reaches_postgres(
    settings: Settings, tmp_path: Path
) -> None:
    key = f"customer:{uuid.uuid4().hex[:8]}"
    assert subsystems.current().state.router.mode(key) == "write-back"
    flusher = FlusherProcess(settings.environment(), log_dir=tmp_path).start()
    try:
        _hammer_from(settings, key)
        record = state.get(key)
        assert record is not None
        _check_exact(record.value)
        assert wait_until_clean(runtime.current().state_shards, timeout=30)
    finally:
        flusher.stop()
    persisted = DurableState(subsystems.current().state_rows).get(key)
    assert persisted is not None and persisted.version == PROCESSES * UPDATES
    _check_exact(persisted.value)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("", {"a": 1}, "non-empty string"),
        ("customer:1", ["x"], "JSON object"),
        ("customer:1", {"a": float("nan")}, "not plain JSON"),
        ("customer:1", {"a": {1, 2}}, "not plain JSON"),
    ],
)
def test_bad_key_or_value_is_refused_and_changes_nothing(
    settings: Settings, key: str, value: object, fragment: str
) -> None:
    before = state.get("customer:1")
    with pytest.raises(InvalidPayload, match=fragment):
        state.put(key, value, expected_version=0)  # type: ignore[arg-type]
    assert state.get("customer:1") == before


@pytest.mark.timeout(120)
def test_killed_flusher_is_finished_by_the_next(settings: Settings, tmp_path: Path) -> None:
    keys = [f"customer:{uuid.uuid4().hex[:8]}" for _ in range(3000)]
    for i, key in enumerate(keys):
        state.put(key, {"i": i}, expected_version=0)
        state.update(key, lambda v: {**v, "second": True})
    shards = runtime.current().state_shards
    assert sum(s.dirty_count() for s in shards) == len(keys)
    first = FlusherProcess(settings.environment(), log_dir=tmp_path, name="flusher-1",
                           args=["--batch", "100", "--pace", "0.2"]).start()
    assert wait_for(lambda: sum(s.dirty_count() for s in shards) < len(keys), timeout=30)
    first.kill()  # mid-drain: whatever round it was in is left half done
    left = sum(s.dirty_count() for s in shards)
    assert 0 < left < len(keys)
    second = FlusherProcess(settings.environment(), log_dir=tmp_path, name="flusher-2").start()
    try:
        assert wait_until_clean(shards, timeout=60)
    finally:
        second.stop()
    durable = DurableState(subsystems.current().state_rows)
    for i, key in enumerate(keys[::50]):
        persisted = durable.get(key)
        assert persisted is not None
        assert persisted.value == {"i": i * 50, "second": True}
        assert persisted.version == 2


def test_repeated_reads_of_a_flushed_key_come_from_cache_or_postgres_alike(
    settings: Settings, tmp_path: Path
) -> None:
    key = f"customer:{uuid.uuid4().hex[:8]}"
    state.put(key, {"v": 1}, expected_version=0)
    flusher = FlusherProcess(settings.environment(), log_dir=tmp_path).start()
    try:
        assert wait_until_clean(runtime.current().state_shards, timeout=30)
    finally:
        flusher.stop()
    for shard in runtime.current().state_shards:
        shard.client.delete(f"orch:state:{key}")  # as if evicted after going clean
    orchestrator.configure(settings)
    record = state.get(key)
    assert record is not None and record.value == {"v": 1} and record.version == 1
    assert state.put(key, {"v": 2}, expected_version=1).version == 2
