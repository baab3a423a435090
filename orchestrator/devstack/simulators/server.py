"""Running a simulator: in a background thread (tests, demo) or in the foreground."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp


class ServerHandle:
    """A running server; ``url`` is its base address, ``stop()`` ends it."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, host: str,
                 port: int) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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
