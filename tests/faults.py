"""Faults injected for real: a TCP proxy of our own in front of a service.

``TcpProxy(upstream_port)`` forwards ``127.0.0.1:<proxy.port>`` to the service. While
``down()`` is in effect, every open connection is cut and new ones are accepted and closed
at once: to a client, the service is unreachable. ``up()`` restores it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


class TcpProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._down = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self.cut = 0  # connections cut or refused while down
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self._down.is_set():
                self.cut += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(src)
            self._drop(dst)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        _close(sock)

    def down(self) -> None:
        """Cut every open connection and refuse new ones."""
        self._down.set()
        with self._lock:
            open_now = list(self._sockets)
        self.cut += len(open_now) // 2
        for sock in open_now:
            self._drop(sock)

    def up(self) -> None:
        self._down.clear()

    def close(self) -> None:
        self._closed.set()
        self.down()
        with contextlib.suppress(OSError):
            self._server.close()


@contextlib.contextmanager
def tcp_proxy(upstream_port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(upstream_port)
    try:
        yield proxy
    finally:
        proxy.close()


class ReroutingProxy:
    """A proxy that can move live client connections to another server, as a proxy
    with a failover behind it does: after ``reroute(port)`` each client connection's
    next bytes go to a new connection to ``port``, and the client's own connection stays
    open. Only safe between a request and its reply, as with any request-reply client
    that waits for each reply (the tests reroute between commands). Use it with
    ``contextlib.closing``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True, name="reroute-accept").start()

    def reroute(self, upstream_port: int) -> None:
        with self._lock:
            self.upstream_port = upstream_port

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        port = 0
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    return
                with self._lock:
                    target = self.upstream_port
                if upstream is None or target != port:
                    if upstream is not None:
                        _close(upstream)  # its pump ends quietly: the client stays
                    upstream = socket.create_connection(("127.0.0.1", target), timeout=5)
                    upstream.settimeout(None)
                    port = target
                    with self._lock:
                        self._sockets.add(upstream)
                    threading.Thread(target=self._replies, args=(upstream, client),
                                     daemon=True).start()
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _close(client)
            if upstream is not None:
                _close(upstream)

    @staticmethod
    def _replies(upstream: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                client.sendall(data)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._server.close()
        with self._lock:
            open_now = list(self._sockets)
        for sock in open_now:
            _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
