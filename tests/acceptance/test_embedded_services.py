"""The embedded Redis and PostgreSQL: they answer, keep data across restarts and crashes,
clean up after a crashed run, stop without leaving a process, and stay off when configured.

Every server here is our own, on a free loopback port, under the test's tmp_path.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from config import Settings
from orchestrator.devstack.servers.ports import LOOPBACK, process_alive, stop_pids
from orchestrator.devstack.servers.postgres_server import EmbeddedPostgres
from orchestrator.devstack.servers.redis_server import EmbeddedRedis
from orchestrator.devstack.servers.stack import service_stack, started_services
from orchestrator.errors import ServiceError

REPO = Path(__file__).resolve().parents[2]


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _assert_gone(pid: int) -> None:
    # Our own children are reaped by stop(), so the pid must not exist at all.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path / "postgres").start()
    try:
        yield server
    finally:
        server.stop()


def test_embedded_redis_answers_and_stop_leaves_no_process(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"
        client.close()
        pid = server.pid
        assert pid is not None
    finally:
        server.stop()
    assert server.pid is None
    _assert_gone(pid)


def test_embedded_redis_with_appendonly_keeps_a_key_across_restart_and_crash(
    tmp_path: Path,
) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        port = server.port
        redis.Redis.from_url(server.url).set("kept", "yes")
        server.restart()
        assert server.port == port
        assert redis.Redis.from_url(server.url).get("kept") == b"yes"
        redis.Redis.from_url(server.url).set("after-restart", "yes")
        server.kill()  # SIGKILL: no shutdown flush
        server.start()
        assert redis.Redis.from_url(server.url).get("after-restart") == b"yes"


def test_embedded_redis_without_appendonly_keeps_nothing(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis", appendonly=False) as server:
        redis.Redis.from_url(server.url).set("lost", "yes")
        server.restart()
        assert redis.Redis.from_url(server.url).get("lost") is None
    assert list((tmp_path / "redis").glob("*.aof")) == []


def test_embedded_redis_on_a_taken_port_raises_service_error_with_the_log(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        server = EmbeddedRedis(tmp_path / "redis", port=taken.getsockname()[1])
        with pytest.raises(ServiceError, match="ORCH_REDIS_URL") as failure:
            server.start(timeout=10)
    assert "Address already in use" in str(failure.value)
    assert server.pid is None


def test_a_data_directory_in_use_by_a_live_server_is_refused(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis") as first:
        with pytest.raises(ServiceError, match="in use by another process"):
            EmbeddedRedis(tmp_path / "redis").start()
        assert first.pid is not None and process_alive(first.pid)


def test_embedded_postgres_answers_and_keeps_data_across_restart_on_its_port(
    postgres: EmbeddedPostgres,
) -> None:
    port = postgres.port
    assert postgres.url == f"postgresql+psycopg://postgres@127.0.0.1:{port}/orchestrator"
    with psycopg.connect(_plain(postgres.url), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    old_pid = postgres.pid
    postgres.restart()
    assert postgres.port == port and postgres.pid != old_pid
    with psycopg.connect(_plain(postgres.url)) as conn:
        assert conn.execute("SELECT v FROM kept").fetchone() == (42,)


def test_embedded_postgres_recovers_committed_data_after_a_kill(
    postgres: EmbeddedPostgres,
) -> None:
    with psycopg.connect(_plain(postgres.url), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (7)")
    postgres.kill()
    assert (postgres.pgdata / "postmaster.pid").exists()  # stale, left by the crash
    postgres.start()
    with psycopg.connect(_plain(postgres.url)) as conn:
        assert conn.execute("SELECT v FROM kept").fetchone() == (7,)


def test_embedded_postgres_stop_leaves_no_process_and_refuses_connections(
    postgres: EmbeddedPostgres,
) -> None:
    pid = postgres.pid
    assert pid is not None
    postgres.stop()
    assert postgres.pid is None
    _assert_gone(pid)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_plain(postgres.url), connect_timeout=2)


_CRASHING_RUN = """
import sys, time
from pathlib import Path
from orchestrator.devstack.servers.postgres_server import EmbeddedPostgres
from orchestrator.devstack.servers.redis_server import EmbeddedRedis
data = Path(sys.argv[1])
redis_server = EmbeddedRedis(data / "redis").start()
postgres = EmbeddedPostgres(data / "postgres").start()
print(redis_server.pid, postgres.pid, flush=True)
time.sleep(60)
"""


def test_servers_left_running_by_a_crashed_run_are_stopped_at_the_next_start(
    tmp_path: Path,
) -> None:
    run = subprocess.Popen([sys.executable, "-c", _CRASHING_RUN, str(tmp_path)], cwd=REPO,
                           stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None
    old = [int(pid) for pid in run.stdout.readline().split()]
    run.kill()  # the owner dies; its servers, in sessions of their own, live on
    run.wait(10)
    try:
        assert len(old) == 2 and all(process_alive(pid) for pid in old)
        with (
            EmbeddedRedis(tmp_path / "redis") as redis_server,
            EmbeddedPostgres(tmp_path / "postgres") as postgres,
        ):
            assert not any(process_alive(pid) for pid in old)
            assert redis.Redis.from_url(redis_server.url).ping()
            with psycopg.connect(_plain(postgres.url)) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        stop_pids([pid for pid in old if process_alive(pid)], signal.SIGKILL, 5.0)


def test_service_stack_with_urls_set_starts_nothing(tmp_path: Path) -> None:
    given = Settings(redis_url="redis://:secret@127.0.0.1:1/0",
                     database_url="postgresql+psycopg://u@127.0.0.1:1/x", data_dir=tmp_path)
    with started_services(given) as stack:
        assert stack.settings.redis_url == given.redis_url
        assert stack.settings.database_url == given.database_url
        assert stack.embedded == ()
        assert "secret" not in stack.services[0].describe()
    with service_stack(given) as resolved:
        assert resolved == given
    assert list(tmp_path.iterdir()) == []


def test_service_stack_without_urls_starts_both_and_stops_them(tmp_path: Path) -> None:
    bare = Settings(redis_url=None, database_url=None, data_dir=tmp_path / "data")
    with started_services(bare) as stack:
        settings = stack.settings
        assert settings.redis_url and settings.database_url
        assert redis.Redis.from_url(settings.redis_url).ping()
        with psycopg.connect(_plain(settings.database_url)) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("orchestrator",)
        pids = [service.pid for service in stack.embedded]
        assert [service.name for service in stack.embedded] == ["Redis", "PostgreSQL"]
    assert (tmp_path / "data" / "redis").is_dir() and (tmp_path / "data" / "postgres").is_dir()
    for pid in pids:
        assert pid is not None
        _assert_gone(pid)


def test_embedded_redis_start_returns_only_once_its_data_is_loaded(tmp_path: Path) -> None:
    # Redis answers INFO while it loads its AOF but refuses data commands (-LOADING); a
    # start() that returned then would hand workers a server that fails their first call.
    with EmbeddedRedis(tmp_path / "redis") as server:
        client = redis.Redis.from_url(server.url)
        client.execute_command("DEBUG", "POPULATE", 1_500_000, "k", 64)
        client.bgrewriteaof()  # the populated keys go into the AOF, so a restart loads them
        deadline = time.monotonic() + 60
        while (client.info("persistence")["aof_rewrite_in_progress"]
               or client.info("persistence")["aof_rewrite_scheduled"]):
            assert time.monotonic() < deadline, "AOF rewrite did not finish within 60 s"
            time.sleep(0.1)
        client.close()
        server.restart()
        fresh = redis.Redis.from_url(server.url, retry=None)
        assert fresh.dbsize() == 1_500_000
        fresh.close()


def test_an_aof_grown_past_the_compaction_size_is_rewritten_at_the_next_start(
    tmp_path: Path,
) -> None:
    # Redis rewrites an AOF by itself only once it doubles within one server's life, so
    # a stack restarted often kept every write ever made: 740 MB and a 13 s load after
    # an evening of benchmarks, until a start timed out. Here 4 MB of overwrites of one
    # key, against a compaction size of 1 MB (the default is 64 MB).
    payload = "x" * 1000
    server = EmbeddedRedis(tmp_path / "redis", compact_aof_bytes=1 << 20)
    with server:
        client = redis.Redis.from_url(server.url)
        for i in range(4000):
            client.set("overwritten", f"{payload}{i}")
        client.set("kept", "yes")
        client.close()
    grown = server.aof_bytes()
    assert grown > 4_000_000
    with server:
        deadline = time.monotonic() + 30
        while server.aof_bytes() > grown // 10:
            assert time.monotonic() < deadline, f"AOF still {server.aof_bytes()} bytes"
            time.sleep(0.1)
        client = redis.Redis.from_url(server.url)
        assert client.get("kept") == b"yes"
        assert client.get("overwritten") == f"{payload}3999".encode()
        client.close()
    with server:  # what the rewrite left loads
        client = redis.Redis.from_url(server.url)
        assert client.get("overwritten") == f"{payload}3999".encode()
        client.close()


def test_an_aof_under_the_compaction_size_is_left_alone(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis")  # the default size: 64 MB
    with server:
        client = redis.Redis.from_url(server.url)
        for i in range(2000):
            client.set("overwritten", f"{i:01000d}")
        client.close()
    grown = server.aof_bytes()
    with server:
        time.sleep(1.0)
        assert server.aof_bytes() >= grown
        assert "BGREWRITEAOF" not in server.log_path.read_text()


def test_a_compaction_that_cannot_reach_the_server_is_logged_not_raised(
    tmp_path: Path,
) -> None:
    # The compaction is a courtesy after the server answered: a connection failing
    # right then must not turn a started server into a failed start.
    server = EmbeddedRedis(tmp_path / "redis")
    with server:
        pass
    server._compact_aof()  # the port is closed now: refused
    log = server.log_path.read_text()
    assert "BGREWRITEAOF: not sent (ConnectionRefusedError" in log
