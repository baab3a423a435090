"""SQLAlchemy engines: one pool per process, never shared across a fork."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine for ``url`` with pre-ping, so a restarted PostgreSQL is reconnected."""
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=10,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )
