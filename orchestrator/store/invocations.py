"""The invocation store: every PostgreSQL read and write of invocations and steps.

An invocation row is written twice: queued at submit, and finished (succeeded or failed,
with all its step records) by the delivery that ends it, in one statement. While it runs,
its steps are recorded in Redis (:mod:`orchestrator.execution.claims`). PostgreSQL's ``now()`` is
the clock of the invocation's own timestamps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from orchestrator.invocation import (
    Invocation,
    InvocationStatus,
    StepRecord,
    StepStatus,
    TokenUsage,
)
from orchestrator.store.reconnect import reconnecting

_CREATE = text(
    """
    INSERT INTO invocations (id, workflow, payload, status, idempotency_key, step_count)
    VALUES (:id, :wf, CAST(:payload AS jsonb), 'queued', :key, :n)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id
    """
)

# Steps and invocation in one statement: one round trip, one commit, all or nothing.
_COMPLETE = text(
    """
    WITH steps AS (
        INSERT INTO invocation_steps
            (invocation_id, idx, name, kind, status, attempts, output, error, fallback,
             prompt_tokens, completion_tokens, started_at, finished_at)
        SELECT :inv, r.idx, r.name, r.kind, r.status, r.attempts, r.output, r.error,
               r.fallback, r.pt, r.ct,
               to_timestamp(r.started_ms / 1000.0), to_timestamp(r.finished_ms / 1000.0)
          FROM jsonb_to_recordset(CAST(:steps AS jsonb)) AS r(
               idx int, name text, kind text, status text, attempts int, output jsonb,
               error text, fallback bool, pt int, ct int, started_ms bigint,
               finished_ms bigint)
        ON CONFLICT (invocation_id, idx) DO NOTHING
    )
    UPDATE invocations
       SET status = :status, output = CAST(:output AS jsonb), error = :error,
           prompt_tokens = :pt, completion_tokens = :ct, finished_at = now(),
           started_at = to_timestamp(:started_ms / 1000.0)
     WHERE id = :inv AND status IN ('queued', 'running')
    RETURNING id
    """
)


# The same statements in the driver's own parameter style, for the driver-level path of
# ``create`` and ``complete`` (see ``_driver_first``).
_COMPLETE_DRIVER = _COMPLETE.text.replace(":started_ms", "%(started_ms)s")
for _name in ("inv", "status", "output", "error", "steps", "pt", "ct"):
    _COMPLETE_DRIVER = _COMPLETE_DRIVER.replace(f":{_name}", f"%({_name})s")
_CREATE_DRIVER = _CREATE.text
for _name in ("id", "wf", "payload", "key", "n"):
    _CREATE_DRIVER = _CREATE_DRIVER.replace(f":{_name}", f"%({_name})s")


@dataclass(frozen=True)
class Unfinished:
    """An invocation not yet succeeded, failed or cancelled."""

    id: str
    workflow: str
    payload: dict[str, Any]
    created_at: datetime

    @property
    def created_ms(self) -> int:
        return int(self.created_at.timestamp() * 1000)


_CANCEL = text(
    """
    WITH steps AS (
        INSERT INTO invocation_steps
            (invocation_id, idx, name, kind, status, attempts, output, error, fallback,
             prompt_tokens, completion_tokens, started_at, finished_at)
        SELECT CAST(:inv AS varchar), r.idx, r.name, r.kind, r.status, r.attempts,
               r.output, r.error, r.fallback, r.pt, r.ct,
               to_timestamp(r.started_ms / 1000.0), to_timestamp(r.finished_ms / 1000.0)
          FROM jsonb_to_recordset(CAST(:steps AS jsonb)) AS r(
               idx int, name text, kind text, status text, attempts int, output jsonb,
               error text, fallback bool, pt int, ct int, started_ms bigint,
               finished_ms bigint)
         WHERE EXISTS (SELECT 1 FROM invocations
                        WHERE id = CAST(:inv AS varchar) AND status IN ('queued', 'running'))
        ON CONFLICT (invocation_id, idx) DO NOTHING
    )
    UPDATE invocations
       SET status = 'cancelled', error = :error, finished_at = now(),
           prompt_tokens = :pt, completion_tokens = :ct
     WHERE id = CAST(:inv AS varchar) AND status IN ('queued', 'running')
    RETURNING id
    """
)

_REOPEN = text(
    """
    WITH gone AS (
        DELETE FROM invocation_steps
         WHERE invocation_id = CAST(:inv AS varchar)
           AND EXISTS (SELECT 1 FROM invocations
                        WHERE id = CAST(:inv AS varchar) AND status IN ('failed', 'cancelled'))
    )
    UPDATE invocations
       SET status = 'queued', error = NULL, output = NULL, finished_at = NULL,
           replays = replays + 1, replayed_at = now()
     WHERE id = CAST(:inv AS varchar) AND status IN ('failed', 'cancelled')
    RETURNING id
    """
)


class InvocationStore:
    """Reads and writes invocations through one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Each statement here stands alone, so none needs BEGIN/COMMIT round trips:
        # PostgreSQL runs a single statement in its own transaction.
        self.auto = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.driver_level = engine.dialect.driver == "psycopg"

    def _driver_first(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of ``sql`` run in autocommit on a pooled connection's psycopg
        connection itself: for the two writes every invocation makes (its row at submit,
        its end on the step path), where SQLAlchemy's statement and result machinery
        was half the client's CPU of the write. Errors come out as SQLAlchemy's (a
        broken connection invalidated, ``connection_invalidated`` set), as from the
        other methods."""
        try:
            pooled = self.engine.raw_connection()
        except psycopg.Error as exc:  # no connection to be had (Engine.connect wraps it)
            raise DBAPIError.instance(sql, None, exc, psycopg.Error, hide_parameters=True,
                                      dialect=self.engine.dialect) from exc
        driver: psycopg.Connection[Any] = pooled.driver_connection  # type: ignore[assignment]
        try:
            driver.autocommit = True
            try:
                with driver.cursor() as cursor:
                    cursor.execute(sql, params)
                    row = cursor.fetchone()
            finally:
                if not driver.broken:
                    driver.autocommit = False
        except psycopg.Error as exc:
            broken = driver.broken or driver.closed
            if broken:
                pooled.invalidate(exc)
            raise DBAPIError.instance(sql, None, exc, psycopg.Error, hide_parameters=True,
                                      connection_invalidated=bool(broken),
                                      dialect=self.engine.dialect) from exc
        finally:
            pooled.close()
        return None if row is None else tuple(row)

    @reconnecting
    def create(
        self,
        *,
        invocation_id: str,
        workflow: str,
        payload_json: str,
        step_count: int,
        idempotency_key: str | None,
    ) -> tuple[str, InvocationStatus | None]:
        """Insert a queued invocation; returns (id, None) when created.

        With an ``idempotency_key`` already used, nothing is inserted and the existing
        invocation's (id, status) comes back; the unique constraint decides, so two
        racing submits cannot both create one.
        """
        params = {"id": invocation_id, "wf": workflow, "payload": payload_json,
                  "key": idempotency_key, "n": step_count}
        # Once per submit, on the producer's path: the driver-level insert, as ``complete``.
        if self.driver_level and self._driver_first(_CREATE_DRIVER, params) is not None:
            return invocation_id, None
        with self.auto.connect() as conn:
            if not self.driver_level:
                row = conn.execute(_CREATE, params).first()
                if row is not None:
                    return invocation_id, None
            existing = conn.execute(
                text("SELECT id, status FROM invocations WHERE idempotency_key = :key"),
                {"key": idempotency_key},
            ).one()
        return str(existing[0]), InvocationStatus(existing[1])

    @reconnecting
    def delete(self, invocation_id: str) -> None:
        """Remove an invocation whose dispatch failed, so a retry with its key can succeed."""
        with self.auto.connect() as conn:
            conn.execute(text("DELETE FROM invocations WHERE id = :id"), {"id": invocation_id})

    @reconnecting
    def complete(
        self,
        invocation_id: str,
        *,
        status: InvocationStatus,
        output: Any,
        error: str | None,
        steps: list[dict[str, Any]],
    ) -> bool:
        """Write the finished invocation and its step records; False if it was finished
        already (by another delivery), in which case nothing changes."""
        started = min((s["started_ms"] for s in steps), default=None)
        params = {"inv": invocation_id, "status": status.value, "output": json.dumps(output),
                  "error": error, "steps": json.dumps(steps),
                  "pt": sum(int(s.get("pt", 0)) for s in steps),
                  "ct": sum(int(s.get("ct", 0)) for s in steps),
                  "started_ms": started}
        if self.driver_level:
            return self._driver_first(_COMPLETE_DRIVER, params) is not None
        with self.auto.connect() as conn:
            row = conn.execute(_COMPLETE, params).first()
        return row is not None

    @reconnecting
    def cancel(self, invocation_id: str, *, reason: str, steps: list[dict[str, Any]]) -> bool:
        """End a queued or running invocation as ``cancelled`` with ``reason``, keeping the
        records of the steps it finished; False when it had ended already."""
        with self.auto.connect() as conn:
            row = conn.execute(_CANCEL, {"inv": invocation_id, "error": reason,
                                         "steps": json.dumps(steps),
                                         "pt": sum(int(s.get("pt", 0)) for s in steps),
                                         "ct": sum(int(s.get("ct", 0)) for s in steps)}
                               ).first()
        return row is not None

    @reconnecting
    def reopen(self, invocation_id: str) -> bool:
        """A failed or cancelled invocation back to ``queued`` for a replay (its step rows
        go: the replay's end writes them anew); False when it was in another state."""
        with self.auto.connect() as conn:
            row = conn.execute(_REOPEN, {"inv": invocation_id}).first()
        return row is not None

    @reconnecting
    def delete_finished_before(self, days: float, *, limit: int = 1000) -> int:
        """Delete up to ``limit`` invocations that ended more than ``days`` ago (oldest
        first; their step rows go with them); returns how many."""
        # ``= ANY(ARRAY(...))``, not ``IN (...)``: with ``IN`` the planner joins the batch
        # to a sequential scan of the whole table; an array is looked up by primary key.
        with self.auto.connect() as conn:
            deleted = conn.execute(text(
                "DELETE FROM invocations WHERE id = ANY(ARRAY("
                " SELECT id FROM invocations WHERE finished_at IS NOT NULL"
                " AND finished_at < now() - make_interval(days => :days)"
                " ORDER BY finished_at LIMIT :n))"), {"days": days, "n": limit})
        return int(deleted.rowcount or 0)

    @reconnecting
    def unfinished_before(self, seconds: float, *, after: Unfinished | None = None,
                          limit: int = 200) -> list[Unfinished]:
        """Queued or running invocations created more than ``seconds`` ago, oldest first,
        from after ``after`` (the last of the previous page)."""
        created = after.created_at if after else datetime(1970, 1, 1, tzinfo=UTC)
        with self.auto.connect() as conn:
            rows = conn.execute(text(
                "SELECT id, workflow, payload, created_at FROM invocations "
                "WHERE status IN ('queued', 'running') "
                "AND created_at < now() - make_interval(secs => :secs) "
                "AND (created_at, id) > (:created, :id) "
                "ORDER BY created_at, id LIMIT :n"),
                {"secs": seconds, "created": created, "id": after.id if after else "",
                 "n": limit}).all()
        return [Unfinished(str(r[0]), str(r[1]), dict(r[2]), r[3]) for r in rows]

    @reconnecting
    def mark_running(self, invocation_ids: list[str]) -> None:
        """Invocations whose first step began: ``queued`` becomes ``running`` (an end
        written meanwhile is left alone)."""
        with self.auto.connect() as conn:
            conn.execute(text(
                "UPDATE invocations SET status = 'running', started_at = now() "
                "WHERE id = ANY(:ids) AND status = 'queued'"), {"ids": invocation_ids})

    @reconnecting
    def status(self, invocation_id: str) -> InvocationStatus | None:
        with self.auto.connect() as conn:
            value = conn.execute(
                text("SELECT status FROM invocations WHERE id = :id"), {"id": invocation_id}
            ).scalar()
        return None if value is None else InvocationStatus(value)

    @reconnecting
    def get(self, invocation_id: str) -> Invocation | None:
        """The invocation with its recorded steps, or None when no such id exists."""
        with self.auto.connect() as conn:
            row = conn.execute(
                text("SELECT * FROM invocations WHERE id = :id"), {"id": invocation_id}
            ).mappings().first()
            if row is None:
                return None
            steps = conn.execute(
                text("SELECT * FROM invocation_steps WHERE invocation_id = :id ORDER BY idx"),
                {"id": invocation_id},
            ).mappings().all()
        return to_invocation(row, [step_from_row(s) for s in steps])

    @reconnecting
    def status_of(self, invocation_ids: list[str]) -> dict[str, InvocationStatus]:
        """Status per id, in one query (ids not found are absent)."""
        if not invocation_ids:
            return {}
        with self.auto.connect() as conn:
            rows = conn.execute(
                text("SELECT id, status FROM invocations WHERE id = ANY(:ids)"),
                {"ids": invocation_ids},
            ).all()
        return {str(r[0]): InvocationStatus(r[1]) for r in rows}

    @reconnecting
    def finished_count(self, invocation_ids: list[str]) -> int:
        """How many of ``invocation_ids`` have succeeded or failed."""
        with self.auto.connect() as conn:
            return int(conn.execute(
                text("SELECT count(*) FROM invocations WHERE id = ANY(:ids) "
                     "AND status IN ('succeeded', 'failed')"),
                {"ids": invocation_ids},
            ).scalar_one())

    @reconnecting
    def last_finished_at(self, invocation_ids: list[str]) -> float:
        """The latest ``finished_at`` among ``invocation_ids``, as a Unix timestamp."""
        with self.auto.connect() as conn:
            return float(conn.execute(
                text("SELECT EXTRACT(EPOCH FROM max(finished_at)) FROM invocations "
                     "WHERE id = ANY(:ids)"),
                {"ids": invocation_ids},
            ).scalar_one())

    @reconnecting
    def counts(self) -> dict[str, int]:
        """Invocations per status."""
        with self.auto.connect() as conn:
            rows = conn.execute(
                text("SELECT status, count(*) FROM invocations GROUP BY status")
            ).all()
        return {str(r[0]): int(r[1]) for r in rows}

    @reconnecting
    def counts_since(self, seconds: float) -> dict[str, int]:
        """Invocations created in the last ``seconds``, per status."""
        with self.auto.connect() as conn:
            rows = conn.execute(text(
                "SELECT status, count(*) FROM invocations "
                "WHERE created_at >= now() - make_interval(secs => :s) GROUP BY status"),
                {"s": seconds}).all()
        return {str(r[0]): int(r[1]) for r in rows}


def _ts(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def step_from_record(index: int, record: dict[str, Any]) -> StepRecord:
    """A step record as kept in flight (see :mod:`orchestrator.execution.runner`)."""
    started = _ts(record["started_ms"])
    assert started is not None
    return StepRecord(
        index=index,
        name=record["name"],
        kind=record["kind"],
        status=StepStatus(record["status"]),
        attempts=int(record["attempts"]),
        output=record.get("output"),
        error=record.get("error"),
        fallback=bool(record.get("fallback", False)),
        tokens=TokenUsage(int(record.get("pt", 0)), int(record.get("ct", 0))),
        started_at=started,
        finished_at=_ts(record.get("finished_ms")),
    )


def step_from_row(s: Any) -> StepRecord:
    return StepRecord(
        index=s["idx"],
        name=s["name"],
        kind=s["kind"],
        status=StepStatus(s["status"]),
        attempts=s["attempts"],
        output=s["output"],
        error=s["error"],
        fallback=s["fallback"],
        tokens=TokenUsage(s["prompt_tokens"], s["completion_tokens"]),
        started_at=s["started_at"],
        finished_at=s["finished_at"],
    )


def to_invocation(row: Any, steps: list[StepRecord]) -> Invocation:
    return Invocation(
        id=row["id"],
        workflow=row["workflow"],
        status=InvocationStatus(row["status"]),
        payload=row["payload"],
        output=row["output"],
        error=row["error"],
        steps=tuple(steps),
        tokens=TokenUsage(row["prompt_tokens"], row["completion_tokens"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        idempotency_key=row["idempotency_key"],
        replays=int(row.get("replays") or 0),
        replayed_at=row.get("replayed_at"),
    )
