"""Running a simulator: in a background thread (tests, demo), in a child process (benchmarks:
a provider that does not share the measuring process's GIL) or in the foreground."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from types import TracebackType

import httpx
import uvicorn
from starlette.types import ASGIApp


class _Served:
    """Where a running server answers: ``host``, ``port`` and its base ``url``."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class ServerHandle(_Served):
    """A server running in a thread; ``url`` is its base address, ``stop()`` ends it."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, host: str,
                 port: int) -> None:
        super().__init__(host, port)
        self._server = server
        self._thread = thread

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                          access_log=False, timeout_keep_alive=30, backlog=2048)


def start_server(app: ASGIApp, host: str = "127.0.0.1", port: int = 0,
                 *, timeout: float = 10.0) -> ServerHandle:
    """Serve ``app`` from a daemon thread; ``port=0`` picks a free port. Returns once the
    server accepts connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, host, bound))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name=f"sim-{bound}")
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"simulator on {host}:{bound} did not start")
        time.sleep(0.01)
    return ServerHandle(server, thread, host, bound)


def serve_forever(app: ASGIApp, host: str, port: int) -> None:
    """Serve ``app`` in the foreground until Ctrl-C."""
    uvicorn.Server(_config(app, host, port)).run()


def serve_socket(app: ASGIApp, fd: int) -> None:
    """Serve ``app`` in the foreground on the listening socket ``fd`` (inherited from the
    parent that called :func:`start_process`) until terminated."""
    sock = socket.socket(fileno=fd)
    host, port = sock.getsockname()[:2]
    uvicorn.Server(_config(app, host, port)).run(sockets=[sock])


class ProcessHandle(_Served):
    """A server running in a child process; ``url`` is its base address, ``stop()`` ends it."""

    def __init__(self, process: subprocess.Popen[bytes], host: str, port: int) -> None:
        super().__init__(host, port)
        self._process = process

    def stop(self, timeout: float = 10.0) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout)

    def __enter__(self) -> ProcessHandle:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_process(command: Sequence[str], ready_path: str, host: str = "127.0.0.1",
                  *, timeout: float = 20.0) -> ProcessHandle:
    """Run ``command`` plus the number of a listening socket it inherits (bound here to a
    free port, so no other program can take the port meanwhile) and wait until
    ``GET ready_path`` answers. Raises ``RuntimeError`` when it does not within ``timeout``
    (the child is stopped)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(2048)
    port = sock.getsockname()[1]
    try:
        process = subprocess.Popen([*command, str(sock.fileno())], pass_fds=(sock.fileno(),))
    finally:
        sock.close()
    handle = ProcessHandle(process, host, port)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{handle.url}{ready_path}", timeout=1.0).status_code < 500:
                return handle
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            handle.stop()
            raise RuntimeError(f"server process {list(command)} did not start on {host}:{port}")
        time.sleep(0.05)
