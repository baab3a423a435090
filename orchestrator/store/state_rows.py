"""Agent-state rows in PostgreSQL: the durable mode's reads and compare-and-set writes,
and the flusher's version-guarded batch upsert of write-back records.

Writes of one key go through the ORM so ``version_id_col`` is checked on flush
(``UPDATE ... WHERE key = :k AND version = :v``); a stale write raises ``StaleDataError``,
which becomes ``VersionConflict``. Values are reassigned, never mutated in place, so
every change emits its UPDATE.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from orchestrator.errors import VersionConflict
from orchestrator.store.models import StateRow
from orchestrator.store.reconnect import reconnecting

# A newer version in PostgreSQL is never overwritten by an older one, whatever the
# order of flushes.
_UPSERT_NEWER = text(
    """
    INSERT INTO agent_state (key, value, version)
    SELECT r.key, r.value, r.version
      FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(key text, value jsonb, version int)
    ON CONFLICT (key) DO UPDATE
        SET value = EXCLUDED.value, version = EXCLUDED.version
      WHERE agent_state.version < EXCLUDED.version
    """
)


class StoredState(NamedTuple):
    key: str
    value: dict[str, Any]
    version: int


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

    def upsert_newer(self, rows: list[dict[str, Any]]) -> None:
        """Write ``rows`` (``key``, ``value``, ``version``) in one statement, each only
        where PostgreSQL holds no newer version. Raises ``SQLAlchemyError`` when
        PostgreSQL is unreachable."""
        with self.auto.connect() as conn:
            conn.execute(_UPSERT_NEWER, {"rows": json.dumps(rows)})
