"""Background work that yields the CPU on a host it shares with workers: niceness, batch
scheduling, and under Linux autogroup the niceness of the process's own session; and
the same for the PostgreSQL backends that do its database work, where they run on
this host.

Linux groups CPU time by session (``kernel.sched_autogroup_enabled``, on in most
distributions' kernels): a process that leads its own session gets a whole session's
share, whatever its niceness, against all the processes of another session together.
PostgreSQL starts every backend in a session of its own, so on a host it shares with
workers (a single-host deployment, a developer's stack, a benchmark), the backend that
writes a flusher's batch outweighs all of a worker's processes put together while it
runs: measured on 2 cores, that alone took write-back acknowledgements' p99 from about
1.34x the plain-Redis floor to 1.58x (``scripts/bench_state.py``). Each of these is
best effort: a process that is not ours to change (another user's, without
``CAP_SYS_NICE``), or a kernel without autogroup, is left as it is.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from sqlalchemy import Engine, event

log = logging.getLogger(__name__)


def lower(pid: int, nice: int) -> None:
    """Give process ``pid`` (0: this one) niceness ``nice`` at least, schedule it as
    batch work (``SCHED_BATCH``: waking, it does not preempt a worker in the middle of
    an acknowledgement; it runs when a time slice ends), and where it leads its own
    session, set that session's niceness too (a session shared with others is left
    alone: its niceness is theirs too). Raises ``OSError`` when not permitted."""
    current = os.getpriority(os.PRIO_PROCESS, pid)
    if current < nice:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    if hasattr(os, "SCHED_BATCH"):
        os.sched_setscheduler(pid, os.SCHED_BATCH, os.sched_param(0))
    target = pid or os.getpid()
    if os.getsid(target) != target:
        return
    try:
        with open(f"/proc/{target}/autogroup", "w", encoding="ascii") as group:
            group.write(str(nice))
    except OSError:
        pass  # autogroup off, or not permitted: the niceness stands alone


def lower_backends(engine: Engine, nice: int) -> None:
    """From now on, lower (:func:`lower`) each PostgreSQL backend a new connection of
    ``engine`` is served by, when that backend is a process of this host: one whose
    command line shows this connection (``postgres: ... 127.0.0.1(<our port>)``, or
    ``[local]`` over a Unix socket). A PostgreSQL elsewhere, or in another PID
    namespace, is left alone."""

    @event.listens_for(engine, "connect")
    def _connected(dbapi_connection: Any, _record: Any) -> None:
        try:
            pid = int(dbapi_connection.info.backend_pid)
            if _serves(pid, int(dbapi_connection.pgconn.socket)):
                lower(pid, nice)
        except (OSError, AttributeError, ValueError) as exc:
            log.debug("PostgreSQL backend left at its priority: %s", exc)


def _serves(pid: int, fd: int) -> bool:
    """Whether process ``pid`` of this host is the PostgreSQL backend at the other end
    of the connection on socket ``fd``."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read()
    if not cmdline.startswith(b"postgres"):
        return False
    with socket.socket(fileno=os.dup(fd)) as sock:
        if sock.family == socket.AF_UNIX:
            return b"[local]" in cmdline
        port = sock.getsockname()[1]
    return f"({port})".encode() in cmdline
