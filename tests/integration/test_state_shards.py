"""The memory layer across shards and through a PostgreSQL outage: nothing acknowledged
is lost."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import orchestrator
from config import Settings
from orchestrator import runtime, state, subsystems
from orchestrator.devstack.processes import FlusherProcess
from orchestrator.devstack.servers.postgres_server import EmbeddedPostgres
from orchestrator.devstack.servers.redis_server import EmbeddedRedis
from orchestrator.errors import Backpressure
from orchestrator.state.durable import DurableState
from orchestrator.state.flusher import wait_until_clean
from orchestrator.state.reshard import reshard
from orchestrator.store.migrate import upgrade


@pytest.fixture
def two_redis(tmp_path: Path) -> Iterator[tuple[EmbeddedRedis, EmbeddedRedis]]:
    first = EmbeddedRedis(tmp_path / "shard-a").start()
    second = EmbeddedRedis(tmp_path / "shard-b").start()
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def _bump(value: dict[str, int]) -> dict[str, int]:
    return {"n": int(value.get("n", 0)) + 1}


@pytest.mark.timeout(120)
def test_two_shards_receive_keys_and_flush_independently(
    settings: Settings, two_redis: tuple[EmbeddedRedis, EmbeddedRedis], tmp_path: Path
) -> None:
    sharded = settings.model_copy(update={"state_redis_urls": [r.url for r in two_redis]})
    orchestrator.configure(sharded)
    keys = [f"customer:{uuid.uuid4().hex[:8]}" for _ in range(300)]
    for key in keys:
        state.update(key, _bump)
    shards = runtime.current().state_shards
    dirty = [s.dirty_count() for s in shards]
    assert sum(dirty) == len(keys) and min(dirty) > 60  # both shards got a fair share
    flusher = FlusherProcess(sharded.environment(), log_dir=tmp_path).start()
    try:
        assert wait_until_clean(shards, timeout=30)
    finally:
        flusher.stop()
    durable = DurableState(subsystems.current().state_rows)
    assert all(durable.get(k) == state.get(k) for k in keys[::10])


@pytest.mark.timeout(120)
def test_adding_a_shard_moves_keys_without_losing_a_write(
    settings: Settings, two_redis: tuple[EmbeddedRedis, EmbeddedRedis], tmp_path: Path
) -> None:
    old_url, new_url = two_redis[0].url, two_redis[1].url
    one = settings.model_copy(update={"state_redis_urls": [old_url]})
    orchestrator.configure(one)
    keys = [f"customer:{uuid.uuid4().hex[:8]}" for _ in range(200)]
    for key in keys:
        state.update(key, _bump)  # acknowledged, dirty, not yet in PostgreSQL
    old_shards = runtime.current().state_shards
    two = settings.model_copy(update={"state_redis_urls": [old_url, new_url]})
    orchestrator.configure(two)
    report = reshard(old_shards, runtime.current().state_shards, subsystems.current().state_rows,
                     owner="test")
    assert report.flushed == len(keys) and report.kept_dirty == 0
    assert 40 < report.moved < 160 and report.moved + report.stayed == len(keys)
    moved_copies = redis.Redis.from_url(old_url).keys("orch:state:*")
    assert len(moved_copies) == report.stayed
    for key in keys:  # keep writing on the new layout
        assert state.update(key, _bump).value == {"n": 2}
    flusher = FlusherProcess(two.environment(), log_dir=tmp_path).start()
    try:
        assert wait_until_clean(runtime.current().state_shards, timeout=30)
    finally:
        flusher.stop()
    durable = DurableState(subsystems.current().state_rows)
    assert all((r := durable.get(k)) is not None and r.value == {"n": 2} and r.version == 2
               for k in keys)


@pytest.mark.timeout(180)
def test_postgres_outage_keeps_acknowledging_up_to_the_bound_and_loses_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    postgres = EmbeddedPostgres(tmp_path / "pg").start()
    flusher: FlusherProcess | None = None
    try:
        upgrade(postgres.url)
        own = settings.model_copy(update={"database_url": postgres.url,
                                          "state_dirty_limit": 400})
        orchestrator.configure(own)
        flusher = FlusherProcess(own.environment(), log_dir=tmp_path).start()
        acknowledged: dict[str, int] = {}
        for i in range(500):  # cached before the outage: a cold read needs PostgreSQL
            key = f"customer:out-{i}"
            acknowledged[key] = state.update(key, _bump).value["n"]
            if i % 200 == 199:
                # Within the bound while PostgreSQL is up too: a fast machine writes
                # 400 records inside one coalescing window, before any is flushed.
                assert wait_until_clean(runtime.current().state_shards, timeout=30)
        refused = 0
        stop = threading.Event()

        def writer() -> None:
            nonlocal refused
            i = 0
            while not stop.is_set():
                key = f"customer:out-{i % 500}"
                try:
                    record = state.update(key, _bump)
                    acknowledged[key] = record.value["n"]
                except Backpressure:
                    refused += 1
                    time.sleep(0.01)
                i += 1

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            time.sleep(1.0)
            postgres.stop()  # down while writes continue
            time.sleep(8.0)
            during_outage = sum(s.dirty_count() for s in runtime.current().state_shards)
            assert during_outage <= 400
            assert refused > 0  # past the bound: Backpressure, not silent loss
            postgres.start()
            time.sleep(1.0)
        finally:
            stop.set()
            thread.join()
        assert wait_until_clean(runtime.current().state_shards, timeout=60)
        durable = DurableState(subsystems.current().state_rows)
        for key, n in acknowledged.items():
            persisted = durable.get(key)
            assert persisted is not None and persisted.value["n"] == n, key
    finally:
        # Always: a flusher left running keeps the shard's lease, and flushes it into
        # this test's PostgreSQL, gone after it, for every later test.
        if flusher is not None:
            flusher.stop()
        postgres.stop()


@pytest.mark.timeout(60)
def test_redis_with_appendonly_keeps_every_acknowledged_write_across_a_crash(
    settings: Settings, tmp_path: Path
) -> None:
    shard = EmbeddedRedis(tmp_path / "aof-shard", appendonly=True).start()
    try:
        on_shard = settings.model_copy(update={"state_redis_urls": [shard.url]})
        orchestrator.configure(on_shard)
        acknowledged = {}
        for i in range(300):
            key = f"customer:aof-{i % 60}"
            acknowledged[key] = state.update(key, _bump).value["n"]
        port = shard.port
        shard.kill()  # SIGKILL, mid-life: no shutdown save
        shard = EmbeddedRedis(tmp_path / "aof-shard", port=port, appendonly=True).start()
        orchestrator.configure(on_shard)
        for key, n in acknowledged.items():
            record = state.get(key)
            assert record is not None and record.value["n"] == n and record.version == n
        assert runtime.current().state_shards[0].dirty_count() == len(acknowledged)
    finally:
        shard.stop()
