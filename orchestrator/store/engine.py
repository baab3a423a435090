"""SQLAlchemy engines: one pool per process, never shared across a fork."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine for ``url``. No ping at checkout (a round trip each time): the store's
    methods retry once on a dead connection instead (:mod:`orchestrator.store.reconnect`)."""
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=10,
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={"connect_timeout": 5},
        # A statement's error never quotes its parameters: they are payloads, outputs and
        # state values, and the error reaches logs, dead letters and the CLI.
        hide_parameters=True,
    )
