"""The flusher supervises itself: a record PostgreSQL refuses is quarantined instead of
blocking its batch, and a Redis blip costs a retry, not the shard's flushing thread.
Real flusher process, real Redis and PostgreSQL."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest
import redis
from prometheus_client import generate_latest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

import orchestrator
from config import Settings
from orchestrator import runtime, state, subsystems
from orchestrator.cli.app import app
from orchestrator.constants import (
    STATE_DIRTY,
    STATE_FLUSHER_LEASE,
    STATE_QUARANTINE,
    STATE_RECORD,
)
from orchestrator.devstack.processes import FlusherProcess
from orchestrator.devstack.servers.redis_server import EmbeddedRedis
from orchestrator.metrics import registry
from orchestrator.state.durable import DurableState
from orchestrator.state.flusher import wait_until_clean
from tests.faults import tcp_proxy
from tests.procs import wait_for


def _bump(value: dict[str, int]) -> dict[str, int]:
    return {"n": int(value.get("n", 0)) + 1}


def _durable() -> DurableState:
    return DurableState(subsystems.current().state_rows)


@pytest.mark.timeout(120)
def test_record_postgres_refuses_is_quarantined_and_the_rest_of_its_batch_flushed(
    settings: Settings, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    good = [f"customer:{tag}-{i}" for i in range(20)]
    for key in good[:10]:
        state.update(key, _bump)
    # state.put/update refuse NUL at the boundary; an older version of this code, or
    # another client of the shard, could still have written one. Written here as such a
    # writer would: the record hash and its dirty mark, between good records of the batch.
    bad = f"customer:{tag}-nul"
    shard = runtime.current().state_shards[0]
    client = shard.client
    client.hset(STATE_RECORD.format(key=bad),
                mapping={"v": json.dumps({"note": "before\x00after"}), "ver": 1})
    now_ms = int(time.time() * 1000)
    client.zadd(STATE_DIRTY, {STATE_RECORD.format(key=bad): now_ms})
    time.sleep(0.01)
    for key in good[10:]:
        state.update(key, _bump)

    flusher = FlusherProcess(settings.environment(), log_dir=tmp_path).start()
    try:
        assert wait_until_clean([shard], timeout=30), flusher.log_tail()
        durable = _durable()
        assert all(durable.get(k) == state.get(k) for k in good)
        assert durable.get(bad) is None
        reasons = {k.decode(): v.decode() for k, v in client.hgetall(STATE_QUARANTINE).items()}
        assert list(reasons) == [bad]
        assert "unsupported Unicode escape sequence" in reasons[bad]
        assert "\\u0000 cannot be converted to text" in reasons[bad]
        assert client.hget(STATE_RECORD.format(key=bad), "ver") == b"1"  # kept in Redis
        assert "quarantined" in flusher.log_tail(200) and flusher.alive

        shown = CliRunner().invoke(app, ["status", "--json"], env=settings.environment())
        assert shown.exit_code == 0, shown.output
        held = json.loads(shown.output)["state_quarantine"][shard.name]
        assert held == {"count": 1, "records": {bad: reasons[bad]}}
        exposed = generate_latest(registry(subsystems.current())).decode()
        assert re.search(rf'^orchestrator_state_quarantined\{{shard="{re.escape(shard.name)}"\}} '
                         r"1\.0$", exposed, re.MULTILINE), exposed

        # Written again with a value PostgreSQL takes: flushed, out of quarantine.
        state.put(bad, {"note": "fixed"}, expected_version=1)
        assert wait_for(lambda: not client.hexists(STATE_QUARANTINE, bad), timeout=10)
        assert wait_until_clean([shard], timeout=10)
        fixed = durable.get(bad)
        assert fixed is not None and fixed.value == {"note": "fixed"} and fixed.version == 2
    finally:
        flusher.stop()


@pytest.mark.timeout(120)
def test_flusher_survives_a_redis_restart_and_flushes_writes_made_after_it(
    settings: Settings, tmp_path: Path
) -> None:
    shard_server = EmbeddedRedis(tmp_path / "shard", appendonly=True).start()
    flusher: FlusherProcess | None = None
    try:
        on_shard = settings.model_copy(update={"state_redis_urls": [shard_server.url]})
        orchestrator.configure(on_shard)
        tag = uuid.uuid4().hex[:8]
        before = [f"customer:{tag}-before-{i}" for i in range(50)]
        for key in before:
            state.update(key, _bump)
        flusher = FlusherProcess(on_shard.environment(), log_dir=tmp_path).start()
        assert wait_until_clean(runtime.current().state_shards, timeout=30)

        shard_server.stop()  # a blip: down for 1.5 s, back with its data (appendonly)
        time.sleep(1.5)
        shard_server.start()
        orchestrator.configure(on_shard)  # this process's clients reconnect

        after = [f"customer:{tag}-after-{i}" for i in range(50)]
        for key in [*after, *before]:
            state.update(key, _bump)
        shards = runtime.current().state_shards
        assert wait_until_clean(shards, timeout=30), flusher.log_tail()
        durable = _durable()
        assert all((r := durable.get(k)) is not None and r.value == {"n": 1} for k in after)
        assert all((r := durable.get(k)) is not None and r.value == {"n": 2} for k in before)
        assert flusher.alive
        log = flusher.log_tail(400)
        assert re.search(rf"Redis shard {re.escape(shards[0].name)} unavailable "
                         r"\(ConnectionError: ", log), log
        assert "flushing again after" in log
        assert "Traceback" not in log
        assert not redis.Redis.from_url(shard_server.url).hlen(STATE_QUARANTINE)
    finally:
        if flusher is not None:
            flusher.stop()
        shard_server.stop()


@pytest.mark.timeout(120)
def test_a_flusher_cut_off_from_postgres_hands_its_shard_to_one_that_reaches_it(
    settings: Settings, tmp_path: Path
) -> None:
    """Two flushers for availability, on hosts of their own: the one holding the shard's
    lease loses PostgreSQL (a proxy in front of it, down), the other still reaches it.
    Within a lease length (the default, 10 s) the cut-off one lets the lease go and the
    other flushes everything acknowledged."""
    assert settings.database_url is not None
    shard_server = EmbeddedRedis(tmp_path / "shard", appendonly=True).start()
    cut_off: FlusherProcess | None = None
    standby: FlusherProcess | None = None
    database = make_url(settings.database_url)
    try:
        with tcp_proxy(int(database.port or 5432)) as proxy:
            proxy.down()
            on_shard = settings.model_copy(update={"state_redis_urls": [shard_server.url]})
            through_proxy = on_shard.model_copy(update={"database_url": database.set(
                host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)})
            orchestrator.configure(on_shard)
            shard = runtime.current().state_shards[0]
            cut_off = FlusherProcess(through_proxy.environment(), log_dir=tmp_path,
                                     name="cut-off").start()
            assert wait_for(lambda: shard.client.get(STATE_FLUSHER_LEASE) is not None, 30)
            standby = FlusherProcess(on_shard.environment(), log_dir=tmp_path,
                                     name="standby").start()
            keys = [f"customer:{uuid.uuid4().hex[:8]}" for _ in range(50)]
            for key in keys:
                state.update(key, _bump)
            assert wait_until_clean([shard], timeout=45), cut_off.log_tail()
            durable = _durable()
            assert all((r := durable.get(k)) is not None and r.value == {"n": 1} for k in keys)
            assert "letting the shard's lease go" in cut_off.log_tail(400)
            assert "PostgreSQL unavailable" in cut_off.log_tail(400)
    finally:
        for flusher in (cut_off, standby):
            if flusher is not None:
                flusher.stop()
        shard_server.stop()
