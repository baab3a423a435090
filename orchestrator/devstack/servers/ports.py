"""Loopback ports and the local server processes behind them.

Finding a free port and waiting for one to answer, plus the process plumbing both embedded
servers share: telling a live server from a zombie, finding servers a crashed run left on a
data directory, stopping processes with escalation, and the per-directory owner lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from orchestrator.errors import ServiceError

LOOPBACK = "127.0.0.1"
_PROC = Path("/proc")


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now (the kernel's pick).

    Another process may take it before the caller binds it; the embedded servers then fail
    to start with a :class:`ServiceError` that says so, rather than sharing a port.
    """
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Whether something accepts TCP connections on ``host:port`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def log_tail(path: Path, limit: int = 3000) -> str:
    """The last ``limit`` characters of the log at ``path``, or a note that there is none."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - limit))
            return log.read().decode("utf-8", "replace").strip() or "(log is empty)"
    except OSError:
        return f"(no log at {path})"


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a running process.

    A zombie (exited, not yet reaped) counts as gone: on machines whose PID 1 reaps nothing,
    a stopped leftover server stays a zombie forever and ``kill(pid, 0)`` still succeeds.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return not _PROC.is_dir()  # without /proc, kill() is all we can go by
    # The name field may hold spaces and parentheses; the state follows the last ")".
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def can_find_processes() -> bool:
    """Whether :func:`processes_in` can see processes (it needs Linux's /proc)."""
    return (_PROC / "self" / "cwd").exists()


def processes_in(directory: Path, name: str) -> list[int]:
    """Pids of live processes called ``name`` whose working directory is ``directory``.

    Both embedded servers change into their data directory (and PostgreSQL's backends
    inherit it), so this finds a server whatever port it listens on. The name check keeps a
    shell that happens to sit in that directory safe. Empty where /proc is missing.
    """
    target = directory.resolve()
    found: list[int] = []
    if not can_find_processes():
        return found
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "comm").read_text().strip() != name:
                continue
            if Path(os.readlink(entry / "cwd")) != target:
                continue
        except OSError:  # exited meanwhile, or a zombie (no cwd)
            continue
        found.append(int(entry.name))
    return found


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` seconds for ``pids`` to exit; return those still alive."""
    remaining = list(pids)
    deadline = time.monotonic() + timeout
    while remaining:
        remaining = [pid for pid in remaining if process_alive(pid)]
        if not remaining or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return remaining


def stop_pids(pids: Iterable[int], sig: signal.Signals, timeout: float) -> None:
    """Send ``sig`` to processes that are not our children, wait, then SIGKILL the rest.

    Raises :class:`ServiceError` if any survives SIGKILL (another user's process, say).
    """
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    stubborn = wait_gone(pids, timeout)
    for pid in stubborn:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    survivors = wait_gone(stubborn, 5.0)
    if survivors:
        raise ServiceError(f"could not stop processes {survivors}; stop them by hand")


class DirectoryLock:
    """An exclusive ``flock`` on ``<directory>/owner.lock`` held while we run a server there.

    The kernel drops the lock when its holder dies, which is what tells a crashed run's
    leftover server (fine to stop) from a server another live run still uses (not ours).
    The file descriptor is not inherited by child processes.
    """

    def __init__(self, directory: Path, fix_hint: str) -> None:
        self.path = directory / "owner.lock"
        self.fix_hint = fix_hint
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def acquire(self) -> None:
        """Take the lock; raises :class:`ServiceError` naming the holder if it is taken."""
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = self.path.open("a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "unknown"
            lock_file.close()
            raise ServiceError(
                f"{self.path.parent} is in use by another process (pid {holder}); stop that "
                f"run first, or {self.fix_hint}") from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        self._file = lock_file

    def release(self) -> None:
        """Drop the lock (closing the file releases the flock)."""
        if self._file is not None:
            self._file.close()
            self._file = None
