"""Embedded mode: with no service URLs, the fleet brings its own Redis and PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
import redis

import orchestrator
from config import Settings
from orchestrator.invocation import InvocationStatus
from orchestrator.local import local_fleet
from orchestrator.services.postgres_server import EmbeddedPostgres
from orchestrator.services.redis_server import EmbeddedRedis
from orchestrator.services.stack import service_stack


def test_embedded_redis_with_appendonly_keeps_writes_across_a_crash(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    try:
        redis.Redis.from_url(server.url).set("kept", "yes")
        port = server.port
        server.kill()  # SIGKILL: no shutdown save
        server = EmbeddedRedis(tmp_path / "redis", port=port).start()
        assert redis.Redis.from_url(server.url).get("kept") == b"yes"
    finally:
        server.stop()
    assert server.pid is None


def test_embedded_postgres_restarts_on_its_port_with_its_data(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg").start()
    plain = server.url.replace("+psycopg", "")
    try:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        server.restart()
        with psycopg.connect(plain) as conn:
            assert conn.execute("SELECT v FROM kept").fetchone() == (42,)
    finally:
        server.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(plain, connect_timeout=2)


def test_configured_services_start_nothing(tmp_path: Path) -> None:
    given = Settings(redis_url="redis://127.0.0.1:1/0",
                     database_url="postgresql+psycopg://u@127.0.0.1:1/x", data_dir=tmp_path)
    with service_stack(given) as resolved:
        assert resolved.redis_url == given.redis_url
        assert resolved.database_url == given.database_url
    assert not (tmp_path / "redis").exists() and not (tmp_path / "postgres").exists()


@pytest.mark.timeout(180)
def test_embedded_mode_boots_and_runs_a_workflow(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", workflow_modules=["orchestrator.agents"],
                        agents_concurrency=1, llm_worker_concurrency=4,
                        tools_worker_concurrency=2)
    assert settings.redis_url is None and settings.database_url is None
    with local_fleet(settings) as fleet:
        assert fleet.settings.redis_url and fleet.settings.database_url
        assert len(fleet.embedded) == 2
        invocation = orchestrator.wait(orchestrator.submit(
            "support-triage",
            {"customer_id": "emb-1", "ticket_id": "T-1", "message": "refund please"}),
            timeout=90)
        assert invocation.status is InvocationStatus.SUCCEEDED, invocation.error
        pids = [w.pid for w in fleet.workers]
    for pid in pids:  # every worker stopped with the fleet
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
