"""The PostgreSQL schema as SQLAlchemy 2 models: every table the orchestrator owns.

Alembic migrations create them; ``migrations/env.py`` compares against this metadata.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class InvocationRow(Base):
    __tablename__ = "invocations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workflow: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    step_count: Mapped[int] = mapped_column(Integer)
    output: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replays: Mapped[int] = mapped_column(Integer, server_default="0")
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # The metrics exporter's windows and the stalled scan (migration 0005); counts per
    # workflow and status, listings newest first, dead letters (migration 0006).
    __table_args__ = (
        Index("ix_invocations_finished_at", "finished_at",
              postgresql_where=text("finished_at IS NOT NULL")),
        Index("ix_invocations_unfinished_created_at", "created_at", "id",
              postgresql_where=text("status IN ('queued', 'running')")),
        Index("ix_invocations_workflow_status", "workflow", "status"),
        Index("ix_invocations_created_at", "created_at"),
        Index("ix_invocations_failed_created_at", "created_at",
              postgresql_where=text("status = 'failed'")),
    )


# Invocations per (workflow, status), as changes appended by triggers and folded (see
# orchestrator/store/counts.py; migration 0006). No key: rows are summed, never looked up.
invocation_counts = Table(
    "invocation_counts", Base.metadata,
    Column("workflow", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("n", BigInteger, nullable=False),
)


class StepRow(Base):
    __tablename__ = "invocation_steps"

    invocation_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("invocations.id", ondelete="CASCADE"), primary_key=True
    )
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    output: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    fallback: Mapped[bool] = mapped_column(default=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StateRow(Base):
    """A durable agent-state record (and the flushed copy of a write-back one).

    ``version_id_col`` makes every ORM flush check the version it read:
    ``UPDATE ... WHERE key = :k AND version = :v``.
    """

    __tablename__ = "agent_state"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSONB)
    version: Mapped[int] = mapped_column(Integer, nullable=False)

    __mapper_args__ = {"version_id_col": version}
