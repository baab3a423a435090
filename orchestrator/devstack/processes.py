"""Child processes of the local stack: each in its own process group, logging to a file.

Stopping a process group is written once, here (:func:`stop_group`, :func:`kill_group`),
for the embedded servers, workers and flushers alike. A worker's command line is not
built here: a worker runs ``python -m workers`` (see ``workers/__main__.py``), which
builds it from the worker profiles.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from orchestrator.devstack.netns import Host
from orchestrator.errors import ServiceError

REPO = Path(__file__).resolve().parents[2]


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a child and its process group (``start_new_session=True``), and reap it."""
    if proc.poll() is None:
        # The group id is the child's pid; only valid while it is unreaped, as it is here.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def stop_group(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float, *,
               whole_group: bool = False) -> None:
    """Stop a child started with ``start_new_session=True``: ``sig`` (to the child, or to
    its whole group), wait up to ``timeout`` seconds, then SIGKILL the group.

    The SIGKILL goes to the whole process group, so helpers it forked (pool processes,
    Redis's AOF rewrite, PostgreSQL's backends) go with it. The child is reaped before
    returning.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if whole_group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    kill_group(proc)


class ChildProcess:
    """A command in its own process group, its output appended to ``log_path``."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], *, log_path: Path,
                 name: str) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False  # stopped or killed on purpose: a supervisor leaves it alone

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.stopped = False
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.proc

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    @property
    def exited_on_its_own(self) -> bool:
        """Started, then ended without :meth:`stop` or :meth:`kill` (a crash, or an exit
        of its own such as a stalled worker's)."""
        return self.proc is not None and not self.stopped and self.proc.poll() is not None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL the whole group (main process and its children) at once."""
        self.stopped = True
        if self.proc is not None:
            kill_group(self.proc)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the whole group (a warm shutdown), then SIGKILL what is left."""
        self.stopped = True
        if self.proc is not None:
            stop_group(self.proc, signal.SIGTERM, timeout, whole_group=True)


class CommandProcess(ChildProcess):
    """``orchestrator <command>``, ready once its log says "started"."""

    def __init__(self, env: Mapping[str, str], command: str, *, log_dir: Path,
                 name: str | None = None, args: list[str] | None = None) -> None:
        name = name or command
        super().__init__([sys.executable, "-m", "orchestrator.cli.app", command,
                          *(args or [])], env, log_path=log_dir / f"{name}.log", name=name)

    def start(self, *, ready_timeout: float = 30.0) -> Self:
        proc = self._spawn()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceError(f"{self.name} exited early:\n{self.log_tail()}")
            if b"started" in self.log_path.read_bytes():
                return self
            time.sleep(0.1)
        self.stop()
        raise ServiceError(f"{self.name} did not start:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)


class FlusherProcess(CommandProcess):
    """``orchestrator flusher``."""

    def __init__(self, env: Mapping[str, str], *, log_dir: Path, name: str = "flusher",
                 args: list[str] | None = None) -> None:
        super().__init__(env, "flusher", log_dir=log_dir, name=name, args=args)


class ReconcilerProcess(CommandProcess):
    """``orchestrator reconciler``."""

    def __init__(self, env: Mapping[str, str], *, log_dir: Path,
                 name: str = "reconciler") -> None:
        super().__init__(env, "reconciler", log_dir=log_dir, name=name)


class WorkerProcess(ChildProcess):
    """A Celery worker of the fleet: ``python -m workers`` with a queue's profile
    (``pool`` and ``concurrency`` override the profile's when given).

    ``command`` replaces the whole command line (a benchmark's plain-Celery baseline);
    it must name the worker ``--hostname <name>@%h`` so readiness can be checked.
    ``host``: run it on a simulated host (:mod:`orchestrator.devstack.netns`), in that
    host's network namespace under its hostname; its node is ``<name>@<hostname>``.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        queues: str,
        *,
        pool: str | None = None,
        concurrency: int | None = None,
        log_dir: Path,
        name: str | None = None,
        extra_args: list[str] | None = None,
        loglevel: str = "INFO",
        command: list[str] | None = None,
        host: Host | None = None,
    ) -> None:
        self.host = host
        name = name or f"{queues.replace(',', '-')}-{uuid.uuid4().hex[:6]}"
        profile = [*(["--pool", pool] if pool else []),
                   *(["--concurrency", str(concurrency)] if concurrency else [])]
        argv = command or [
            sys.executable, "-m", "workers", "--queues", queues, *profile,
            "--loglevel", loglevel, "--hostname", f"{name}@%h", "--without-gossip",
            "--without-mingle", *(extra_args or []),
        ]
        where = f"-{host.hostname}" if host else ""
        super().__init__(host.wrap(argv) if host else argv, env,
                         log_path=log_dir / f"worker-{name}{where}.log", name=name)

    def start(self, *, ready_timeout: float = 60.0) -> WorkerProcess:
        """Start and wait for Celery's "ready"; raises ``ServiceError`` with the log tail."""
        proc = self._spawn()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServiceError(f"worker {self.name} exited early:\n{self.log_tail()}")
            if self._answers_ping():
                return self
            time.sleep(0.2)
        self.stop()
        raise ServiceError(
            f"worker {self.name} not ready after {ready_timeout:.0f}s:\n{self.log_tail()}"
        )

    @property
    def node_name(self) -> str:
        return f"{self.name}@{self.host.hostname if self.host else socket.gethostname()}"

    def _answers_ping(self) -> bool:
        # A ping works at any log level, unlike watching the log for "ready.".
        if b" ready." in self.log_path.read_bytes():
            return True
        broker = self.env.get("ORCH_REDIS_URL")
        if not broker:
            return False
        from celery import Celery

        app = Celery("ping", broker=broker, set_as_current=False)
        try:
            return bool(app.control.ping(destination=[self.node_name], timeout=0.5))
        finally:
            app.close()
