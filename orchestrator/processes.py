"""Celery worker processes on this machine, for ``up``, ``demo``, benchmarks and tests.

Each worker runs in its own process group, so stopping it stops its pool children too.
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
from collections.abc import Mapping
from pathlib import Path

from orchestrator.errors import ServiceError

REPO = Path(__file__).resolve().parent.parent


class FlusherProcess:
    """``orchestrator flusher`` in its own process group, logging to a file."""

    def __init__(self, env: Mapping[str, str], *, log_dir: Path, name: str = "flusher",
                 args: list[str] | None = None) -> None:
        self.name = name
        self.args = args or []
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, ready_timeout: float = 30.0) -> FlusherProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.cli.app", "flusher", *self.args], cwd=REPO,
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"flusher exited early:\n{self.log_path.read_text()[-2000:]}")
            if b"started" in self.log_path.read_bytes():
                return self
            time.sleep(0.1)
        raise ServiceError("flusher did not start")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        self.kill()


class WorkerProcess:
    """``celery -A workers.app worker`` with the given arguments, logging to a file."""

    def __init__(
        self,
        env: Mapping[str, str],
        queues: str,
        *,
        pool: str = "prefork",
        concurrency: int = 2,
        log_dir: Path,
        name: str | None = None,
        extra_args: list[str] | None = None,
        loglevel: str = "INFO",
    ) -> None:
        self.name = name or f"{queues.replace(',', '-')}-{uuid.uuid4().hex[:6]}"
        self.log_path = log_dir / f"worker-{self.name}.log"
        self.argv = [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker",
            "-Q", queues, "--pool", pool, "--concurrency", str(concurrency),
            "--prefetch-multiplier", "1", "--loglevel", loglevel, "-E",
            "--hostname", f"{self.name}@%h", "--without-gossip", "--without-mingle",
            *(extra_args or []),
        ]
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, ready_timeout: float = 60.0) -> WorkerProcess:
        """Start and wait for Celery's "ready"; raises ``ServiceError`` with the log tail."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
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
        return f"{self.name}@{socket.gethostname()}"

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

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children) at once."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL whatever is left of the group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        self._signal_group(signal.SIGKILL)
        self.proc.wait(timeout=10)
