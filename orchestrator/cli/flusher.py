"""``orchestrator flusher``: persist every shard's dirty state records until stopped."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import typer

from orchestrator import logs, priority, subsystems
from orchestrator.cli.output import EXIT_FAILED
from orchestrator.state.flusher import COALESCE_SECONDS, Flusher, run_flushers


def run_flusher(*, batch: int, interval: float, coalesce: float = COALESCE_SECONDS,
                pace: float = 0.0, nice: int = 0) -> None:
    """One flushing thread per shard; SIGTERM or Ctrl-C stops them after their round.
    Exits 1 if a flushing thread died (it is logged): never lives on without one."""
    sub = subsystems.current()
    if nice:
        # This process, and the PostgreSQL backends that write its batches: both are
        # background work on a host shared with workers (see orchestrator.priority).
        priority.lower(0, nice)
        priority.lower_backends(sub.state_rows.engine, nice)
    logs.configure(sub.settings.log_format)
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    flushers = [Flusher(shard, sub.state_rows, owner=sub.identity.owner() + f":{shard.name}",
                        batch=batch, interval=interval, coalesce=coalesce, pace=pace)
                for shard in sub.runtime.state_shards]
    if not run_flushers(flushers, stop):
        logging.error("flusher exiting with status %d: a flushing thread died", EXIT_FAILED)
        raise typer.Exit(EXIT_FAILED)
    logging.info("flusher stopped")
