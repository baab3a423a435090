"""A Redis that comes back older than PostgreSQL never loses an acknowledged write.

Each test runs its own ``redis-server`` (appendonly, as compose runs it) as the state
shard, writes through ``orchestrator.state``, flushes to PostgreSQL with the flusher,
then makes the shard come back as each real loss would leave it: an AOF that lost its
last writes, an RDB snapshot restored, a failover to a replica that lagged, a fresh
server. What PostgreSQL took must be what the next write builds on, and the flusher must
never mark clean a record PostgreSQL did not take.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import text

import orchestrator
from config import Settings
from orchestrator import runtime, state, subsystems
from orchestrator.constants import STATE_DIRTY, STATE_RECORD
from orchestrator.devstack.servers.redis_server import EmbeddedRedis
from orchestrator.state.durable import DurableState
from orchestrator.state.flusher import Flusher
from orchestrator.state.record import Record
from orchestrator.state.writeback import Shard, conflicts
from tests.faults import ReroutingProxy


def _bump(value: dict[str, int]) -> dict[str, int]:
    return {"n": int(value.get("n", 0)) + 1}


def _key() -> str:
    return f"customer:{uuid.uuid4().hex[:8]}"


def _on(settings: Settings, server: EmbeddedRedis) -> Shard:
    """Point this process's state at ``server`` alone (new connections, as a restarted
    worker or a client told of a failover would have); returns the shard."""
    orchestrator.configure(settings.model_copy(update={"state_redis_urls": [server.url]}))
    return runtime.current().state_shards[0]


def _flusher(shard: Shard) -> Flusher:
    """A flusher whose rounds take every dirty record (these tests flush at chosen
    moments; the coalescing window has tests of its own)."""
    return Flusher(shard, subsystems.current().state_rows, owner=f"test-{uuid.uuid4().hex[:6]}",
                   coalesce=0)


def _flush(flusher: Flusher) -> None:
    """Flush rounds until the shard holds nothing dirty. A connection the shard's restart
    broke is retried, as the flusher's own loop does."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            flusher.flush_once()
            if flusher.shard.dirty_count() == 0:
                return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise AssertionError(f"shard {flusher.shard.name} still has dirty records")


def _cached(shard: Shard, key: str) -> tuple[int, dict[str, int]]:
    """(version, value) the shard itself holds for ``key``, read past the state API."""
    value, version = shard.client.hmget(STATE_RECORD.format(key=key), "v", "ver")
    assert value is not None and version is not None
    return int(version), json.loads(value)


def _aof(data_dir: Path) -> Path:
    """The AOF of a server on ``data_dir``: a file up to Redis 6.2, a directory since 7."""
    return next(p for p in (data_dir / "appendonlydir", data_dir / "appendonly.aof")
                if p.exists())


def _save_aof(server: EmbeddedRedis, data_dir: Path, to: Path) -> None:
    """The AOF as a crash at this moment would leave it: what Redis wrote to it, which
    the page cache holds. Redis writes it before replying, except while an fsync of
    ``appendfsync everysec`` is still running on a busy disk: then it holds the writes
    back, up to 2 s, so this waits for its AOF buffer to be empty first."""
    client = redis.Redis.from_url(server.url)
    deadline = time.monotonic() + 10
    while int(client.info("persistence").get("aof_buffer_length", 0)):
        assert time.monotonic() < deadline, "Redis kept its AOF writes back for 10 s"
        time.sleep(0.01)
    client.close()
    aof = _aof(data_dir)
    to.mkdir()
    if aof.is_dir():
        shutil.copytree(aof, to / aof.name)
    else:
        shutil.copy(aof, to / aof.name)


def _restore_aof(saved: Path, data_dir: Path) -> None:
    aof = _aof(data_dir)
    if aof.is_dir():
        shutil.rmtree(aof)
    else:
        aof.unlink()
    copy = saved / aof.name
    if copy.is_dir():
        shutil.copytree(copy, aof)
    else:
        shutil.copy(copy, aof)


def _persisted(key: str) -> Record | None:
    return DurableState(subsystems.current().state_rows).get(key)


@pytest.fixture
def shard_dir(tmp_path: Path) -> Path:
    return tmp_path / "shard"


@pytest.fixture
def servers() -> Iterator[list[EmbeddedRedis]]:
    """Every server a test starts goes in this list; all are stopped at teardown."""
    started: list[EmbeddedRedis] = []
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def _start(servers: list[EmbeddedRedis], data_dir: Path, *, port: int | None = None,
           appendonly: bool = True) -> EmbeddedRedis:
    server = EmbeddedRedis(data_dir, port=port, appendonly=appendonly).start()
    servers.append(server)
    return server


def _builds_on_postgres(settings: Settings, shard: Shard, key: str) -> None:
    """The shard came back holding version 2 of ``key`` while PostgreSQL holds version 3:
    the next update must build on 3, and PostgreSQL must end holding it."""
    assert _cached(shard, key) == (2, {"n": 2})  # the shard did come back older
    record = state.update(key, _bump)
    assert (record.version, record.value) == (4, {"n": 4})  # no increment lost
    _flush(_flusher(shard))
    assert _persisted(key) == Record(key, {"n": 4}, 4)
    assert state.get(key) == Record(key, {"n": 4}, 4)


@pytest.mark.timeout(120)
def test_update_after_the_aof_lost_its_last_writes_builds_on_postgres(
    settings: Settings, servers: list[EmbeddedRedis], shard_dir: Path, tmp_path: Path
) -> None:
    server = _start(servers, shard_dir)
    shard = _on(settings, server)
    key = _key()
    state.update(key, _bump)
    state.update(key, _bump)
    # The AOF as a crash would leave it: everything up to version 2 (dirty: not yet
    # flushed), none of what follows.
    _save_aof(server, shard_dir, tmp_path / "aof-at-2")
    state.update(key, _bump)
    _flush(_flusher(shard))
    assert _persisted(key) == Record(key, {"n": 3}, 3)
    server.kill()
    _restore_aof(tmp_path / "aof-at-2", shard_dir)
    server = _start(servers, shard_dir, port=server.port)
    shard = _on(settings, server)
    assert shard.dirty_count() == 1  # version 2, dirty, as the AOF had it
    _builds_on_postgres(settings, shard, key)


@pytest.mark.timeout(120)
def test_update_after_an_rdb_restore_builds_on_postgres(
    settings: Settings, servers: list[EmbeddedRedis], shard_dir: Path, tmp_path: Path
) -> None:
    server = _start(servers, shard_dir)
    shard = _on(settings, server)
    key = _key()
    state.update(key, _bump)
    state.update(key, _bump)
    _flush(_flusher(shard))
    shard.client.save()  # the nightly snapshot, at version 2 (clean)
    state.update(key, _bump)
    _flush(_flusher(shard))
    assert _persisted(key) == Record(key, {"n": 3}, 3)
    server.kill()
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy(shard_dir / "dump.rdb", restored / "dump.rdb")
    server = _start(servers, restored, port=server.port, appendonly=False)  # loads the RDB
    _builds_on_postgres(settings, _on(settings, server), key)


@pytest.mark.timeout(120)
def test_update_after_a_failover_to_a_lagging_replica_builds_on_postgres(
    settings: Settings, servers: list[EmbeddedRedis], tmp_path: Path
) -> None:
    primary = _start(servers, tmp_path / "primary")
    replica = _start(servers, tmp_path / "replica")
    replica_client = redis.Redis.from_url(replica.url)
    replica_client.replicaof("127.0.0.1", primary.port)
    shard = _on(settings, primary)
    key = _key()
    state.update(key, _bump)
    state.update(key, _bump)
    assert shard.client.wait(1, 10_000) == 1  # the replica has version 2
    # Cut off from its primary (a partition): from here on it lags.
    replica_client.replicaof("NO", "ONE")
    state.update(key, _bump)
    _flush(_flusher(shard))
    assert _persisted(key) == Record(key, {"n": 3}, 3)
    primary.kill()  # the primary dies; clients fail over to the replica
    _builds_on_postgres(settings, _on(settings, replica), key)
    replica_client.close()


@pytest.mark.timeout(120)
def test_a_connection_a_proxy_moves_to_a_lagging_replica_still_builds_on_postgres(
    settings: Settings, servers: list[EmbeddedRedis], tmp_path: Path
) -> None:
    """As the failover above, but behind a proxy that moves the writer's open
    connection to the replica: the copy of the compare-and-set bound to the primary
    (which skips the epoch check for the primary's records) must not be loaded on the
    replica, whose records the primary stamped."""
    primary = _start(servers, tmp_path / "primary")
    replica = _start(servers, tmp_path / "replica")
    replica_client = redis.Redis.from_url(replica.url)
    replica_client.replicaof("127.0.0.1", primary.port)
    with contextlib.closing(ReroutingProxy(primary.port)) as proxy:
        orchestrator.configure(settings.model_copy(update={
            "state_redis_urls": [f"redis://127.0.0.1:{proxy.port}/0"]}))
        shard = runtime.current().state_shards[0]
        key = _key()
        state.update(key, _bump)
        state.update(key, _bump)
        assert shard.wire.epoch() == _epoch_of(primary)
        assert shard.client.wait(1, 10_000) == 1  # the replica has version 2
        replica_client.replicaof("NO", "ONE")  # cut off: from here on it lags
        state.update(key, _bump)
        _flush(_flusher(shard))
        assert _persisted(key) == Record(key, {"n": 3}, 3)
        proxy.reroute(replica.port)  # the writer's connection stays open
        _builds_on_postgres(settings, shard, key)
        assert shard.wire.epoch() == _epoch_of(replica)
    replica_client.close()


def _epoch_of(server: EmbeddedRedis) -> str:
    """The epoch a connection to ``server`` learns: its run_id's first 16 hex digits."""
    client = redis.Redis.from_url(server.url)
    try:
        return str(client.info("server")["run_id"])[:16]
    finally:
        client.close()


@pytest.mark.timeout(120)
def test_a_record_cached_by_another_server_is_checked_against_postgres_before_use(
    settings: Settings
) -> None:
    """The record hash rewritten to its version-2 content, as a replica that lagged would
    hold it (stamped by its primary), with PostgreSQL at version 3: reads serve 3, a
    compare-and-set on 2 loses, on 3 wins."""
    shard = runtime.current().state_shards[0]
    key = _key()
    for _ in range(3):
        state.update(key, _bump)
    _flush(_flusher(shard))
    lagging: dict[str | bytes, str | int] = {
        "v": json.dumps({"n": 2}), "ver": 2, "ep": "0123456789abcdef"}
    shard.client.hset(STATE_RECORD.format(key=key), mapping=lagging)
    assert state.get(key) == Record(key, {"n": 3}, 3)
    shard.client.hset(STATE_RECORD.format(key=key), mapping=lagging)
    with pytest.raises(orchestrator.errors.VersionConflict):
        state.put(key, {"n": 99}, expected_version=2)
    shard.client.hset(STATE_RECORD.format(key=key), mapping=lagging)
    assert state.put(key, {"n": 4}, expected_version=3).version == 4
    writeback = subsystems.current().state.router.writeback
    assert writeback is not None and writeback.reconciled["adopted"] == 3


@pytest.mark.timeout(120)
def test_total_loss_reloads_flushed_versions_and_the_flusher_reports_it(
    settings: Settings, servers: list[EmbeddedRedis], shard_dir: Path,
    caplog: pytest.LogCaptureFixture
) -> None:
    server = _start(servers, shard_dir)
    shard = _on(settings, server)
    flushed, unflushed = _key(), _key()
    for _ in range(3):
        state.update(flushed, _bump)
    state.update(unflushed, _bump)
    flusher = _flusher(shard)
    _flush(flusher)
    state.update(unflushed, _bump)  # acknowledged, not flushed: the write at risk
    server.kill()
    shutil.rmtree(shard_dir)  # the machine and its disk are gone
    server = _start(servers, shard_dir, port=server.port)
    with caplog.at_level(logging.WARNING, logger="orchestrator.state.flusher"):
        _flush(flusher)  # the same flusher, living through the loss
    reports = [r.getMessage() for r in caplog.records if "server changed" in r.getMessage()]
    assert len(reports) == 1 and shard.name in reports[0]
    shard = _on(settings, server)
    assert state.get(flushed) == Record(flushed, {"n": 3}, 3)
    assert state.get(unflushed) == Record(unflushed, {"n": 1}, 1)  # its flushed version
    assert state.update(flushed, _bump) == Record(flushed, {"n": 4}, 4)
    assert state.update(unflushed, _bump) == Record(unflushed, {"n": 2}, 2)
    _flush(_flusher(shard))
    assert _persisted(flushed) == Record(flushed, {"n": 4}, 4)
    assert _persisted(unflushed) == Record(unflushed, {"n": 2}, 2)


@pytest.mark.timeout(120)
def test_flusher_replaces_a_dirty_record_older_than_postgres_and_says_so(
    settings: Settings, servers: list[EmbeddedRedis], shard_dir: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture
) -> None:
    server = _start(servers, shard_dir)
    shard = _on(settings, server)
    key = _key()
    state.update(key, _bump)
    state.update(key, _bump)
    _save_aof(server, shard_dir, tmp_path / "aof-at-2")
    state.update(key, _bump)
    _flush(_flusher(shard))
    server.kill()
    _restore_aof(tmp_path / "aof-at-2", shard_dir)
    server = _start(servers, shard_dir, port=server.port)
    shard = _on(settings, server)
    assert _cached(shard, key) == (2, {"n": 2}) and shard.dirty_count() == 1
    with caplog.at_level(logging.INFO):
        _flush(_flusher(shard))  # the flusher meets it before any reader or writer
    # Not version 2 marked clean: PostgreSQL's version 3, which descends from it.
    assert _cached(shard, key) == (3, {"n": 3})
    assert _persisted(key) == Record(key, {"n": 3}, 3)
    assert any(key in r.getMessage() and r.levelno >= logging.WARNING
               for r in caplog.records if r.name == "orchestrator.state.flusher")
    assert conflicts(shard) == {}  # one history: nothing for an operator to merge


@pytest.mark.timeout(60)
@pytest.mark.parametrize("postgres_version", [2, 5])
def test_flusher_meeting_another_history_in_postgres_keeps_both_and_warns(
    settings: Settings, postgres_version: int, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL holds the key at the cache's version or newer, with other content:
    written behind the shard's back (a split brain, a hand edit). Neither is marked
    clean silently: PostgreSQL's row becomes the record, the cached version is kept
    aside for an operator, and a warning names the key."""
    shard = runtime.current().state_shards[0]
    key = _key()
    state.update(key, _bump)
    state.update(key, _bump)  # version 2, dirty
    with runtime.current().engine.begin() as conn:
        conn.execute(text("INSERT INTO agent_state (key, value, version) VALUES "
                          "(:k, CAST(:v AS jsonb), :ver)"),
                     {"k": key, "v": json.dumps({"n": 70}), "ver": postgres_version})
    with caplog.at_level(logging.WARNING):
        _flush(_flusher(shard))
    assert _persisted(key) == Record(key, {"n": 70}, postgres_version)  # not overwritten
    assert _cached(shard, key) == (postgres_version, {"n": 70})
    aside = conflicts(shard)[key]
    assert (aside["version"], aside["value"], aside["postgres_version"]) == (
        2, {"n": 2}, postgres_version)
    assert any(key in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert shard.client.zscore(STATE_DIRTY, STATE_RECORD.format(key=key)) is None
    assert state.update(key, _bump).value == {"n": 71}  # continues from PostgreSQL's
