"""``orchestrator flusher``: persist every shard's dirty state records until stopped."""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

import typer

from orchestrator import logs, subsystems
from orchestrator.cli.output import EXIT_FAILED
from orchestrator.constants import STATE_COALESCE_SECONDS
from orchestrator.state.flusher import Flusher, run_flushers


def lower_priority(nice: int) -> None:
    """Add ``nice`` to this process's CPU niceness and, on Linux, schedule it as batch
    work (``SCHED_BATCH``): a round that wakes it no longer preempts a worker in the
    middle of an acknowledgement, it runs when a time slice ends; its share of the CPU
    stays what its niceness gives. Where Linux groups CPU time by
    session (``kernel.sched_autogroup_enabled``, on in most distributions' kernels), a
    process that leads its own session (as under a supervisor that starts each program
    with ``setsid``) gets a whole session's share whatever its niceness; its session's
    niceness (``/proc/self/autogroup``) is set too then. A session shared with others is
    left alone: its niceness is theirs too."""
    os.nice(nice)
    if hasattr(os, "SCHED_BATCH"):  # Linux: waking, it waits for a slice to end
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    if os.getsid(0) != os.getpid():
        return
    try:
        with open("/proc/self/autogroup", "w", encoding="ascii") as group:
            group.write(str(nice))
    except OSError:
        pass  # not Linux, autogroup off, or not permitted: the niceness stands alone


def run_flusher(*, batch: int, interval: float, coalesce: float = STATE_COALESCE_SECONDS,
                pace: float = 0.0, nice: int = 0) -> None:
    """One flushing thread per shard; SIGTERM or Ctrl-C stops them after their round.
    Exits 1 if a flushing thread died (it is logged): never lives on without one."""
    if nice:
        lower_priority(nice)
    sub = subsystems.current()
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
