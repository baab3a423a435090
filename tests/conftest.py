"""Shared fixtures: a database of our own, a Redis db of our own, simulators, workers.

Services: the local Redis and PostgreSQL of ../shared/SERVICES.md (override with
``ORCH_TEST_REDIS_URL`` / ``ORCH_TEST_ADMIN_DATABASE_URL``); where none answers, the
embedded ones are started for the session. Nothing here touches data it did not create:
one Redis db number (flushed only by us) and one database created and dropped by us.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from pydantic import SecretStr

import orchestrator
from config import Settings
from config.settings import SIMULATED_LLM_KEYS
from orchestrator import runtime
from orchestrator.store.migrate import upgrade
from tests.procs import Fleet
from tests.providers import provider  # noqa: F401 - the LLM provider simulator fixture

REDIS_URL = os.environ.get("ORCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
ADMIN_DATABASE_URL = os.environ.get(
    "ORCH_TEST_ADMIN_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def service_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(redis url, admin database url): the local services, or embedded ones."""
    if _answers(REDIS_URL) and _answers(ADMIN_DATABASE_URL):
        yield REDIS_URL, ADMIN_DATABASE_URL
        return
    from orchestrator.devstack.servers.postgres_server import EmbeddedPostgres
    from orchestrator.devstack.servers.redis_server import EmbeddedRedis

    data = tmp_path_factory.mktemp("services")
    with (
        EmbeddedRedis(data / "redis") as server,
        EmbeddedPostgres(data / "pg", database="postgres") as postgres,
    ):
        yield server.url, postgres.url


def _psycopg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(scope="session")
def database_url(service_urls: tuple[str, str]) -> Iterator[str]:
    """A database created for this test session, migrated to head, dropped afterwards."""
    admin = service_urls[1]
    name = f"orch_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_psycopg_url(admin), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    yield url
    runtime.current().close()
    with psycopg.connect(_psycopg_url(admin), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url(service_urls: tuple[str, str]) -> str:
    """Our own Redis db number, emptied before each test (FLUSHDB of that db alone)."""
    url = service_urls[0]
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def simulators() -> Iterator[tuple[str, str]]:
    """(LLM base URL, tools URL) of the built-in simulators, in this process's threads."""
    from orchestrator.devstack.simulators.llm_provider import LLMSimConfig
    from orchestrator.devstack.simulators.llm_provider import create_app as llm_app
    from orchestrator.devstack.simulators.server import start_server
    from orchestrator.devstack.simulators.tool_server import ToolSimConfig
    from orchestrator.devstack.simulators.tool_server import create_app as tools_app

    llm = start_server(llm_app(LLMSimConfig(latency=0.02, jitter=0.0)))
    tools = start_server(tools_app(ToolSimConfig(latency=0.01, jitter=0.0)))
    try:
        yield f"{llm.url}/v1", tools.url
    finally:
        llm.stop()
        tools.stop()


@pytest.fixture
def settings(
    redis_url: str, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    """Settings for one test, also pinned as this process's runtime. Tests that also ask
    for ``simulators`` get their URLs; others get unreachable ones, so an unexpected
    provider call fails loudly."""
    llm, tools = "http://127.0.0.1:9/v1", "http://127.0.0.1:9"
    if "simulators" in request.fixturenames:
        llm, tools = request.getfixturevalue("simulators")
    configured = Settings(
        redis_url=redis_url,
        database_url=database_url,
        llm_base_url=llm,
        llm_api_keys=[SecretStr(k) for k in SIMULATED_LLM_KEYS],
        tools_url=tools,
        data_dir=tmp_path / "data",
        workflow_modules=["orchestrator.agents", "tests.workloads", "tests.workflows"],
        # Shorter than the defaults so redeliveries come within a test's time; the
        # retry budget keeps its default (ORCH_STEP_MAX_RETRIES=5), as users run it.
        visibility_timeout=20,
        step_lease_seconds=8,
    )
    orchestrator.configure(configured)
    yield configured
    runtime.current().close()


@pytest.fixture
def fleet(
    settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Fleet]:
    """Start worker processes with ``fleet.start(queues, ...)``; all stop at teardown."""
    workers = Fleet(settings.environment(), tmp_path)
    try:
        yield workers
    finally:
        workers.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(workers.logs())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
