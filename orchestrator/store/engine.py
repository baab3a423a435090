"""SQLAlchemy engines: one pool per process, never shared across a fork."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine for ``url``. Connections are pinged at checkout, so a restarted
    PostgreSQL costs a reconnect, not an error (the hot path checks out twice per
    invocation: at submit and at the end)."""
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=10,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
    )
