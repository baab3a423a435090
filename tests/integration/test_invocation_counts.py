"""The kept invocation counts (store/counts.py, migration 0006) equal a count of the table
whatever wrote it: the store's statements, an operator's SQL, retention, TRUNCATE; and
the migration starts them from the rows already there."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, text

from orchestrator.invocation import InvocationStatus
from orchestrator.store.counts import InvocationCounts
from orchestrator.store.invocations import InvocationStore
from orchestrator.store.migrate import upgrade


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def own_database(service_urls: tuple[str, str]) -> Iterator[str]:
    """A database of this test's own (TRUNCATE and counts of the whole table)."""
    admin = service_urls[1]
    name = f"orch_counts_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_plain(admin), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(_plain(admin), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _actual(engine: Engine) -> dict[tuple[str, str], int]:
    with engine.connect() as conn:
        return {(str(w), str(s)): int(n) for w, s, n in conn.execute(text(
            "SELECT workflow, status, count(*) FROM invocations GROUP BY 1, 2"))}


def _kept(engine: Engine) -> dict[tuple[str, str], int]:
    with engine.connect() as conn:
        return {(w, s): n for w, s, n in InvocationCounts.read(conn)}


def _create(store: InvocationStore, workflow: str) -> str:
    invocation_id = str(uuid.uuid4())
    store.create(invocation_id=invocation_id, workflow=workflow,
                 payload_json=json.dumps({"n": 1}), step_count=1, idempotency_key=None)
    return invocation_id


def _end(store: InvocationStore, invocation_id: str, status: InvocationStatus) -> None:
    step = {"idx": 0, "name": "s", "kind": "python", "status": "done", "attempts": 1,
            "output": None, "error": None, "fallback": False, "pt": 0, "ct": 0,
            "started_ms": 1_700_000_000_000, "finished_ms": 1_700_000_000_001}
    assert store.complete(invocation_id, status=status, output=None, error="boom",
                          steps=[step])


def test_kept_counts_follow_every_write_to_the_invocations_table(own_database: str) -> None:
    upgrade(own_database)
    engine = create_engine(own_database)
    store, counts = InvocationStore(engine), InvocationCounts(engine)
    try:
        ids = [_create(store, "a" if i % 3 else "b") for i in range(12)]
        key = str(uuid.uuid4())
        for _ in range(2):  # a repeated idempotency key inserts nothing
            store.create(invocation_id=str(uuid.uuid4()), workflow="a",
                         payload_json="{}", step_count=1, idempotency_key=key)
        store.mark_running(ids[:8])
        for invocation_id in ids[:5]:
            _end(store, invocation_id, InvocationStatus.SUCCEEDED)
        _end(store, ids[5], InvocationStatus.FAILED)
        assert store.cancel(ids[6], reason="stop", steps=[])
        assert store.reopen(ids[5])
        store.delete(ids[7])
        assert _kept(engine) == _actual(engine)

        counts.fold()
        with engine.connect() as conn:
            assert conn.execute(text(
                "SELECT count(*) FROM invocation_counts")).scalar_one() == len(_actual(engine))
        assert _kept(engine) == _actual(engine)

        with engine.begin() as conn:  # an operator's SQL, and retention's delete
            conn.execute(text("UPDATE invocations SET workflow = 'c' WHERE workflow = 'b'"))
            conn.execute(text("UPDATE invocations SET finished_at = now() - interval '40 days'"
                              " WHERE status = 'succeeded'"))
        assert store.delete_finished_before(30) == 5
        assert _kept(engine) == _actual(engine)
        counts.fold()
        counts.fold()
        assert _kept(engine) == _actual(engine)

        with engine.begin() as conn:
            conn.execute(text("TRUNCATE invocations CASCADE"))
        assert _kept(engine) == {} == _actual(engine)
    finally:
        engine.dispose()


def test_the_migration_starts_the_counts_from_the_rows_there(own_database: str) -> None:
    upgrade(own_database, "0005")
    engine = create_engine(own_database)
    try:
        store = InvocationStore(engine)
        ids = [_create(store, "a" if i % 2 else "b") for i in range(6)]
        _end(store, ids[0], InvocationStatus.SUCCEEDED)
        upgrade(own_database)
        assert _kept(engine) == _actual(engine) == {("a", "queued"): 3, ("b", "queued"): 2,
                                                    ("b", "succeeded"): 1}
    finally:
        engine.dispose()
