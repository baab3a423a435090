"""Durable state: one PostgreSQL row per key, guarded by SQLAlchemy's version column.

Updates go through the ORM so ``version_id_col`` is checked on flush
(``UPDATE ... WHERE key = :k AND version = :v``); a stale write raises ``StaleDataError``,
which becomes ``VersionConflict``. Values are reassigned, never mutated in place, so
every change emits its UPDATE.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Integer, String, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.orm.exc import StaleDataError

from orchestrator.errors import VersionConflict
from orchestrator.state.record import Record
from orchestrator.store.models import Base
from orchestrator.store.reconnect import reconnecting


class StateRow(Base):
    __tablename__ = "agent_state"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSONB)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    __mapper_args__ = {"version_id_col": version}


class DurableState:
    """State records in PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @reconnecting
    def get(self, key: str) -> Record | None:
        with Session(self.engine) as session:
            row = session.get(StateRow, key)
            return None if row is None else Record(row.key, dict(row.value), row.version)

    def put(self, key: str, value: dict[str, Any], *, expected_version: int) -> Record:
        """Write ``value`` if the stored version is ``expected_version`` (0: absent)."""
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
            return Record(row.key, dict(row.value), row.version)
