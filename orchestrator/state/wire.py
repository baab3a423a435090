"""The state update's two commands, sent on a connection of the calling thread's own.

redis-py 8 spends about as much client CPU around a command as the round trip itself
(a connection checked out of the pool and back, with a readiness poll of its socket,
observability counters, a retry wrapper, response callbacks): some 35 µs of 60 on a
2-core VM. An update makes two commands, and writers share the cores with Redis, so
that overhead is most of the gap between an update and the bare round trips it needs.
``Wire`` keeps one connection per thread and process, made with the client pool's own
settings (address, database, password, TLS, timeouts), and sends and reads on it
directly. Error handling is the client's: the connection drops itself on an error,
which is raised (redis-py's ``ConnectionError``, ``TimeoutError``, ``ResponseError``),
and the next command connects again; a connection the server closed meanwhile is
replaced before a command is sent on it, as the pool does. There is no retry, as with
the shard clients (``from_url`` sets none): a compare-and-set sent twice could go in
twice.
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import redis
from redis.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


@dataclass(frozen=True)
class Lua:
    """A script's text and the SHA1 Redis knows it by."""

    text: str
    sha: str

    @classmethod
    def of(cls, text: str) -> Lua:
        return cls(text, hashlib.sha1(text.encode()).hexdigest())


class Wire:
    """Raw commands to the server of ``client``, one connection per thread."""

    def __init__(self, client: redis.Redis) -> None:
        self.pool = client.connection_pool
        self._local = threading.local()
        self._opened: weakref.WeakSet[AbstractConnection] = weakref.WeakSet()

    def _connection(self) -> AbstractConnection:
        connection: AbstractConnection | None = getattr(self._local, "connection", None)
        if connection is None or connection.pid != os.getpid():
            # A forked child gets its own: the parent's socket is the parent's.
            connection = self.pool.connection_class(**self.pool.connection_kwargs)
            self._local.connection = connection
            self._opened.add(connection)
            return connection
        # As the pool checks a connection it hands out: one with something to read
        # before anything was sent was closed by the server (a restart, a failover,
        # an idle timeout), so a new one is made, and the command is not sent to
        # a dead socket to fail.
        try:
            stale = connection.can_read()
        except (RedisConnectionError, RedisTimeoutError, OSError):
            stale = True
        if stale:
            connection.disconnect()
        return connection

    def call(self, *args: Any) -> Any:
        """Send one command and return its reply as the server gave it (bytes, ints,
        lists; no response callbacks)."""
        connection = self._connection()
        connection.send_command(*args)
        return connection.read_response()

    def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` together and return their replies in order. An error reply
        is raised once every reply is read (the connection stays in step)."""
        connection = self._connection()
        packed: Any = connection.pack_commands(commands)  # bytes chunks (stubs say str)
        connection.send_packed_command(packed)
        replies: list[Any] = []
        failed: ResponseError | None = None
        for _ in commands:
            try:
                replies.append(connection.read_response())
            except ResponseError as exc:
                failed = failed or exc
                replies.append(exc)
        if failed is not None:
            raise failed
        return replies

    def evalsha(self, script: Lua, keys: list[Any], args: list[Any]) -> Any:
        """Run ``script`` by its SHA, loading it first where the server lacks it (a new
        or restarted server, or after SCRIPT FLUSH)."""
        try:
            return self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.call("SCRIPT", "LOAD", script.text)
            return self.call("EVALSHA", script.sha, len(keys), *keys, *args)

    def close(self) -> None:
        """Disconnect every connection this process opened (another thread's next
        command connects again)."""
        for connection in list(self._opened):
            if connection.pid == os.getpid():
                connection.disconnect()
