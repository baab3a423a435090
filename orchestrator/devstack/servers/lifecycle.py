"""What both embedded servers share: the child process's bookkeeping, stopping and
killing it, restart, use as a context manager, a readable repr."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import Self

from orchestrator.devstack.processes import kill_group, stop_group
from orchestrator.devstack.servers.ports import DirectoryLock, free_port


class ManagedServer:
    """A server process of ours. Each server has its own ``start(timeout)``, which sets
    ``_proc`` after acquiring ``_lock``; stopping is shared:

    - ``stop_signal``: what asks the server to shut down cleanly; SIGKILL follows after
      ``stop_timeout`` seconds.
    """

    start_timeout: float = 15.0
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 10.0

    def __init__(self, data_dir: Path, port: int | None, *, fix: str) -> None:
        """``port``: chosen free when not given, then kept; ``fix``: what to tell a user
        whose data directory a live run holds."""
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = DirectoryLock(self.data_dir,
                                  f"use another data directory (ORCH_DATA_DIR), or {fix}")

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs (started by this object), else ``None``."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self, timeout: float | None = None) -> Self:
        """Start the server and wait until it serves (default wait: ``start_timeout``
        seconds); a no-op while it runs.

        Raises :class:`ServiceError` (with the end of the server's log) when it exits or
        is not ready in time; whatever was started is stopped again first.
        """
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        try:
            self._launch(self.start_timeout if timeout is None else timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, timeout: float) -> None:
        """Start the process (setting ``_proc``) and return once it is ready to serve."""
        raise NotImplementedError

    def stop(self, timeout: float | None = None) -> None:
        """``stop_signal``, then SIGKILL after ``timeout`` (default ``stop_timeout``)
        seconds. Returns once the server is gone; a no-op when not running."""
        try:
            if self._proc is not None:
                stop_group(self._proc, self.stop_signal,
                           self.stop_timeout if timeout is None else timeout)
        finally:
            self._after_exit()

    def kill(self) -> None:
        """SIGKILL without warning: a crash, for tests of what survives one."""
        try:
            if self._proc is not None:
                kill_group(self._proc)
        finally:
            self._after_exit()

    def _after_exit(self) -> None:
        self._proc = None
        self._lock.release()

    def restart(self, timeout: float | None = None) -> Self:
        """Stop, then start again on the same port and data directory."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.data_dir}, port={self.port}, pid={self.pid})"
