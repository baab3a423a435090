"""Agent-state rows in PostgreSQL: the durable mode's reads and compare-and-set writes,
and the flusher's version-guarded batch upsert of write-back records.

Writes of one key go through the ORM so ``version_id_col`` is checked on flush
(``UPDATE ... WHERE key = :k AND version = :v``); a stale write raises ``StaleDataError``,
which becomes ``VersionConflict``. Values are reassigned, never mutated in place, so
every change emits its UPDATE.

The flusher's batch tells a row PostgreSQL refuses (a data error: ``\u0000`` in a
``jsonb`` value, a key too long, a version out of range) from an outage: a refused batch
is split in halves until each refused row stands alone, and the rest is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Engine, select, text
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from orchestrator.errors import VersionConflict
from orchestrator.store.models import StateRow
from orchestrator.store.reconnect import reconnecting

# A newer version in PostgreSQL is never overwritten by an older one, whatever the
# order of flushes. It returns the keys it wrote: a row left out holds an equal or newer
# version, which the flusher must not take for its own.
_UPSERT_NEWER = text(
    """
    INSERT INTO agent_state (key, value, version)
    SELECT r.key, r.value, r.version
      FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(key text, value jsonb, version int)
    ON CONFLICT (key) DO UPDATE
        SET value = EXCLUDED.value, version = EXCLUDED.version
      WHERE agent_state.version < EXCLUDED.version
    RETURNING key
    """
)
_HELD = text("SELECT key, value, version FROM agent_state WHERE key = ANY(:keys)")


# SQLSTATE classes that blame the data, not the server: data exception (22), integrity
# constraint violation (23), program limit exceeded (54: a value too large).
_DATA_FAULTS = ("22", "23", "54")


@dataclass(frozen=True)
class RefusedRow:
    """A row PostgreSQL would not take, and why (its own words, never the value)."""

    key: str
    reason: str


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` says PostgreSQL is unreachable or the connection was lost."""
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def refusal(exc: BaseException) -> str | None:
    """Why PostgreSQL refused the data of a statement, or ``None`` when ``exc`` is not a
    data error (an outage, a missing table, a bug: retrying later may cure those)."""
    if not isinstance(exc, DBAPIError) or is_outage(exc):
        return None
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or "")
    if sqlstate[:2] not in _DATA_FAULTS:
        return None
    diag = getattr(exc.orig, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc.orig).splitlines()[0]
    detail = getattr(diag, "message_detail", None)
    # Not the CONTEXT line: it quotes the value.
    return (f"PostgreSQL refused it ({sqlstate} {type(exc.orig).__name__}): {primary}"
            + (f" ({detail})" if detail else ""))


def write_separating_refused(rows: list[dict[str, Any]],
                             write: Callable[[list[dict[str, Any]]], None],
                             ) -> list[RefusedRow]:
    """``write(rows)``; when PostgreSQL refuses the batch's data, write each half
    alone, down to single rows, so every row it takes is written and each one it
    refuses is returned with the reason. Costs about 2 log2(n) statements per refused
    row. Raises whatever else ``write`` raises (an outage: nothing is set aside)."""
    if not rows:
        return []
    try:
        write(rows)
        return []
    except DBAPIError as exc:
        reason = refusal(exc)
        if reason is None:
            raise
        if len(rows) == 1:
            return [RefusedRow(str(rows[0]["key"]), reason)]
    half = len(rows) // 2
    return (write_separating_refused(rows[:half], write)
            + write_separating_refused(rows[half:], write))


class StoredState(NamedTuple):
    key: str
    value: dict[str, Any]
    version: int


class Upserted(NamedTuple):
    """What :meth:`StateRows.upsert_newer` did with a batch: the keys it wrote, the rows
    PostgreSQL refused, and for the others (where it holds the same version or a newer
    one) what it holds."""

    written: set[str]
    refused: list[RefusedRow]
    held: dict[str, StoredState]


class StateRows:
    """The ``agent_state`` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.auto = engine.execution_options(isolation_level="AUTOCOMMIT")

    @reconnecting
    def get(self, key: str) -> StoredState | None:
        with Session(self.engine) as session:
            row = session.get(StateRow, key)
            return None if row is None else StoredState(row.key, dict(row.value), row.version)

    def put(self, key: str, value: dict[str, Any], *, expected_version: int) -> StoredState:
        """Write ``value`` if the stored version is ``expected_version`` (0: absent).

        Raises ``VersionConflict`` when the row is at another version.
        """
        with Session(self.engine, expire_on_commit=False) as session:
            try:
                if expected_version == 0:
                    if session.scalar(select(StateRow.key).where(StateRow.key == key)):
                        raise VersionConflict(f"state {key!r} exists; expected it absent")
                    row = StateRow(key=key, value=value)
                    session.add(row)
                else:
                    found = session.get(StateRow, key)
                    if found is None or found.version != expected_version:
                        have = 0 if found is None else found.version
                        raise VersionConflict(
                            f"state {key!r} is at version {have}, not {expected_version}"
                        )
                    found.value = value
                    row = found
                session.commit()
            except (StaleDataError, IntegrityError) as exc:
                session.rollback()
                raise VersionConflict(
                    f"state {key!r} changed since version {expected_version}"
                ) from exc
            return StoredState(row.key, dict(row.value), row.version)

    def upsert_newer(self, rows: list[dict[str, Any]]) -> Upserted:
        """Write ``rows`` (``key``, ``value``, ``version``), each only where PostgreSQL
        holds an older version or none: one statement, unless PostgreSQL refuses some
        rows' data; those are left out and returned with the reason, the others written.
        Rows it did not write are returned with what it holds instead (read after the
        write, so only when some were not written).

        Raises ``SQLAlchemyError`` when PostgreSQL is unreachable or fails otherwise."""
        written: set[str] = set()
        refused = write_separating_refused(rows, lambda batch: written.update(
            self._upsert(batch)))
        out = written | {r.key for r in refused}
        left = [str(row["key"]) for row in rows if row["key"] not in out]
        return Upserted(written, refused, self._held(left) if left else {})

    def _upsert(self, rows: list[dict[str, Any]]) -> list[str]:
        with self.auto.connect() as conn:
            return list(conn.execute(_UPSERT_NEWER, {"rows": json.dumps(rows)}).scalars())

    def _held(self, keys: list[str]) -> dict[str, StoredState]:
        with self.auto.connect() as conn:
            found = conn.execute(_HELD, {"keys": keys})
            return {k: StoredState(k, dict(v), int(ver)) for k, v, ver in found}
