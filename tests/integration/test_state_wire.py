"""The state update's own connections (``orchestrator.state.wire``): one per thread and
process, replaced when the server closed it, in step after an error reply, and scripts
loaded where the server lacks them. Real Redis servers, one of them restarted."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from pathlib import Path

import pytest
import redis

import orchestrator
from config import Settings
from orchestrator import runtime, state
from orchestrator.devstack.servers.redis_server import EmbeddedRedis
from orchestrator.state.wire import Wire


def _bump(value: dict[str, int]) -> dict[str, int]:
    return {"n": int(value.get("n", 0)) + 1}


def _client_id(wire: Wire) -> int:
    return int(wire.call("CLIENT", "ID"))


def _child_id(wire: Wire, out: multiprocessing.Queue[int]) -> None:
    out.put(_client_id(wire))


def test_a_thread_keeps_its_connection_and_other_threads_and_children_get_their_own(
    redis_url: str,
) -> None:
    wire = Wire(redis.Redis.from_url(redis_url))
    mine = _client_id(wire)
    assert _client_id(wire) == mine  # the same connection, call after call
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(_client_id(wire)))
    thread.start()
    thread.join()
    out: multiprocessing.Queue[int] = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_child_id, args=(wire, out))
    child.start()
    child_id = out.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0
    assert len({mine, seen[0], child_id}) == 3
    assert _client_id(wire) == mine  # the child did not take the parent's socket
    wire.close()


def test_an_error_reply_in_a_pipeline_is_raised_after_every_reply_is_read(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url)
    tag = uuid.uuid4().hex[:8]
    client.hset(f"h:{tag}", mapping={"v": "1"})
    client.set(f"s:{tag}", "not a hash")
    wire = Wire(client)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        wire.pipeline([("HMGET", f"h:{tag}", "v"), ("HMGET", f"s:{tag}", "v"),
                       ("HMGET", f"h:{tag}", "v")])
    # The connection is still in step: the next reply is this command's.
    assert wire.pipeline([("HMGET", f"h:{tag}", "v"), ("ECHO", "next")]) == [[b"1"], b"next"]


def test_update_after_the_scripts_were_flushed_loads_them_again(settings: Settings) -> None:
    key = f"customer:{uuid.uuid4().hex[:8]}"
    state.update(key, _bump)
    runtime.current().state_shards[0].client.script_flush()
    assert state.update(key, _bump).value == {"n": 2}


@pytest.mark.timeout(120)
def test_update_right_after_the_shard_restarted_goes_through_on_the_first_call(
    settings: Settings, tmp_path: Path
) -> None:
    """A connection the server closed (here by a restart) is replaced before the
    update's command is sent: the caller sees no ConnectionError."""
    server = EmbeddedRedis(tmp_path / "shard", appendonly=True).start()
    try:
        orchestrator.configure(settings.model_copy(update={"state_redis_urls": [server.url]}))
        key = f"customer:{uuid.uuid4().hex[:8]}"
        assert state.update(key, _bump).version == 1
        server.stop()
        server.start()
        # Same process, same clients: no reconfiguring.
        record = state.update(key, _bump)
        assert (record.version, record.value) == (2, {"n": 2})
    finally:
        server.stop()


def test_a_connection_the_server_closed_is_replaced_every_time_it_happens(
    redis_url: str,
) -> None:
    """Each connection watches its own socket: the server closing the connection that
    replaced a closed one is noticed too, and no command fails."""
    admin = redis.Redis.from_url(redis_url)
    wire = Wire(redis.Redis.from_url(redis_url))
    seen = [_client_id(wire)]
    for _ in range(3):
        admin.client_kill_filter(_id=seen[-1])
        seen.append(_client_id(wire))  # sent on a new connection, not the closed one
    assert len(set(seen)) == 4
    assert _client_id(wire) == _client_id(wire) == seen[-1]  # and kept while it is open
    wire.close()
    admin.close()


def test_wire_connections_are_closed_with_the_runtime(settings: Settings) -> None:
    shard = runtime.current().state_shards[0]
    mine = _client_id(shard.wire)
    listed = shard.client.client_list()
    assert any(int(c["id"]) == mine for c in listed)
    runtime.current().close()
    others = redis.Redis.from_url(shard.url).client_list()
    assert all(int(c["id"]) != mine for c in others)


@pytest.mark.timeout(120)
def test_updates_and_reads_on_the_server_a_connection_learned_do_not_ask_its_run_id(
    settings: Settings, tmp_path: Path
) -> None:
    """The epoch check of a compare-and-set or a read asks the server's run_id (INFO)
    only where the connection does not know it: 200 updates and 200 reads of 5 records
    ask it a handful of times (a connection learning it, each record's first load or
    check after a restart), not once per call; after a restart the new server is
    learned again and its records are written as before."""
    server = EmbeddedRedis(tmp_path / "shard", appendonly=True).start()
    try:
        orchestrator.configure(settings.model_copy(update={"state_redis_urls": [server.url]}))
        shard = runtime.current().state_shards[0]
        keys = [f"customer:{uuid.uuid4().hex[:8]}" for _ in range(5)]
        admin = redis.Redis.from_url(server.url)
        for restart in range(2):
            admin.config_resetstat()
            for i in range(200):
                state.update(keys[i % 5], _bump)
                state.get(keys[i % 5])
            info_calls = int(admin.info("commandstats")["cmdstat_info"]["calls"])
            assert info_calls <= 20, f"INFO asked {info_calls} times for 200 updates and reads"
            assert shard.wire.epoch() == str(admin.info("server")["run_id"])[:16]
            assert [_version(k) for k in keys] == [40 * (restart + 1)] * 5
            if not restart:
                server.stop()
                server.start()  # the AOF brings the records back, stamped by the last one
                admin = redis.Redis.from_url(server.url)
        admin.close()
    finally:
        server.stop()


def _version(key: str) -> int:
    record = state.get(key)
    return 0 if record is None else record.version
