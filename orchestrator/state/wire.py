"""The state's reads and an update's two commands, sent on a connection of the calling
thread's own.

redis-py 8 spends about as much client CPU around a command as the round trip itself
(a connection checked out of the pool and back, with a readiness poll of its socket,
observability counters, a retry wrapper, response callbacks): some 35 µs of 60 on a
2-core VM. An update makes two commands, and writers share the cores with Redis, so
that overhead is most of the gap between an update and the bare round trips it needs.
``Wire`` keeps one connection per thread and process, made with the client pool's own
settings (address, database, password, TLS, timeouts), packs each command with hiredis
in one call and sends and reads on it directly. Error handling is the client's: the
connection drops itself on an error, which is raised (redis-py's ``ConnectionError``,
``TimeoutError``, ``ResponseError``), and the next command connects again. There is no
retry, as with the shard clients (``from_url`` sets none): a compare-and-set sent twice
could go in twice.

A connection the server closed meanwhile (a restart, a failover, an idle timeout) is
replaced before a command is sent on it, as the pool does: between commands nothing is
owed to the client, so a socket with anything to read (the server's close, or bytes
it should not have sent) is stale. The pool asks that of a fresh poll object each time
(about 10 µs of Python per command on a 2-core VM, a sixth of an update's client CPU);
each connection here keeps one poll object, registered when it connects, and asks it
with one ``poll(0)``.

A connection also learns, when it connects, which server it reaches: the first 16 hex
digits of the server's ``run_id`` (new at every start, different on every replica),
asked with ``INFO server`` on that connection. A :class:`BoundLua` script is then sent
as its copy for that server (see ``lua/put.lua``: a record of that epoch needs no INFO
in the script). The copy only ever runs on the server it was learned from:
- a TCP connection reaches one server for its life, and every reconnect learns again;
- a copy reaches a server's script cache only by an EVAL of its text on a connection
  that has just learned that server. Redis replicates and persists a script's effects,
  never the script run by EVAL (SCRIPT LOAD, which Redis 6 copies to replicas and the
  AOF, is not used for copies), so a restarted server or a promoted replica lacks the
  copies of the server it replaced;
- a server that lacks the copy (NOSCRIPT) is asked again which it is before its own is
  sent, so even a proxy that moves a live connection to another server (a failover
  behind it) gets that server's copy, never the last one's.
Servers older than Redis 6 get the script as written.
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import hiredis
import redis
from redis.connection import AbstractConnection
from redis.exceptions import NoScriptError, ResponseError


@dataclass(frozen=True)
class Lua:
    """A script's text and the SHA1 Redis knows it by."""

    text: str
    sha: str

    @classmethod
    def of(cls, text: str) -> Lua:
        return cls(text, hashlib.sha1(text.encode()).hexdigest())


# The line of a :class:`BoundLua` script that its copy for a server replaces.
UNBOUND = "local SERVER = false"
_RUN_ID = re.compile(rb"^run_id:([0-9a-f]{40})\s*$", re.MULTILINE)
_VERSION = re.compile(rb"^redis_version:(\d+)\.", re.MULTILINE)
# Copies kept per script: one per server epoch seen (a restart or failover adds one).
_BOUND_KEPT = 16


@dataclass(frozen=True)
class BoundLua:
    """A script whose ``local SERVER = false`` line a connection replaces with the epoch
    of the server it reaches (a quoted hex string), where it knows it."""

    generic: Lua
    _copies: dict[str, Lua] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, text: str) -> BoundLua:
        if text.count(UNBOUND) != 1:
            raise ValueError(f"a server-bound script needs one {UNBOUND!r} line")
        return cls(Lua.of(text))

    def on(self, epoch: str | None) -> Lua:
        """The copy for the server of ``epoch`` (the script as written for ``None``)."""
        if epoch is None:
            return self.generic
        found = self._copies.get(epoch)
        if found is None:
            if len(self._copies) >= _BOUND_KEPT:
                self._copies.clear()
            found = Lua.of(self.generic.text.replace(UNBOUND, f'local SERVER = "{epoch}"'))
            self._copies[epoch] = found
        return found


def server_epoch(info: bytes) -> str | None:
    """The epoch (``run_id``'s first 16 hex digits) in a server's ``INFO server`` text,
    or ``None`` for a server older than Redis 6 or one that does not say."""
    version, run_id = _VERSION.search(info), _RUN_ID.search(info)
    if version is None or run_id is None or int(version.group(1)) < 6:
        return None
    return run_id.group(1)[:16].decode()


class Wire:
    """Raw commands to the server of ``client``, one connection per thread."""

    def __init__(self, client: redis.Redis) -> None:
        self.pool = client.connection_pool
        self._local = threading.local()
        self._opened: weakref.WeakSet[AbstractConnection] = weakref.WeakSet()

    def _connection(self) -> AbstractConnection:
        local = self._local
        connection: AbstractConnection | None = getattr(local, "connection", None)
        if connection is None or connection.pid != os.getpid():
            # A forked child gets its own: the parent's socket is the parent's.
            connection = self.pool.connection_class(**self.pool.connection_kwargs)
            connection.register_connect_callback(self._learn_server)
            local.connection = connection
            local.epoch = None
            local.watched = None
            self._opened.add(connection)
            connection.connect()
            return connection
        sock = _socket(connection)
        if sock is None:  # dropped after an error: connect again, learning the server
            connection.connect()
            return connection
        if sock is not local.watched:
            self._watch(connection)
        # Something to read before anything was sent: the server closed it (or the
        # connection is out of step). A new one is made, and the command is not sent
        # to a dead socket to fail.
        if local.poller.poll(0):
            connection.disconnect()
            connection.connect()  # learns the server again
        return connection

    def _watch(self, connection: AbstractConnection) -> None:
        """A poll object for this thread's connection, on the socket it has now."""
        sock = _socket(connection)
        poller = select.poll()
        if sock is not None:
            poller.register(sock, select.POLLIN)
        self._local.poller = poller
        self._local.watched = sock

    def _learn_server(self, connection: AbstractConnection) -> None:
        """On every (re)connect, in the connecting thread: which server this is."""
        self._local.epoch = None
        self._watch(connection)
        _write(connection, ("INFO", "server"))
        try:
            info = connection.read_response()
        except ResponseError:
            return  # INFO not allowed: scripts are sent as written
        if isinstance(info, str):
            info = info.encode()
        if isinstance(info, bytes):
            self._local.epoch = server_epoch(info)

    def epoch(self) -> str | None:
        """The epoch of the server this thread's connection reaches (connecting if it
        must), or ``None`` where it is not known."""
        self._connection()
        found: str | None = self._local.epoch
        return found

    def call(self, *args: Any) -> Any:
        """Send one command and return its reply as the server gave it (bytes, ints,
        lists; no response callbacks)."""
        return _send(self._connection(), args)

    def pipeline(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` together and return their replies in order. An error reply
        is raised once every reply is read (the connection stays in step)."""
        connection = self._connection()
        packed: Any = [b"".join(hiredis.pack_command(command) for command in commands)]
        connection.send_packed_command(packed, check_health=False)  # stubs say str
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

    def evalsha(self, script: Lua | BoundLua, keys: list[Any], args: list[Any]) -> Any:
        """Run ``script`` by its SHA, loading it first where the server lacks it (a new
        or restarted server, or after SCRIPT FLUSH). A :class:`BoundLua` runs as its copy
        for the server this connection reaches (chosen once the connection is up)."""
        connection = self._connection()
        if isinstance(script, BoundLua):
            return self._eval_bound(connection, script, keys, args)
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return _send(connection, command)
        except NoScriptError:
            _send(connection, ("SCRIPT", "LOAD", script.text))
            return _send(connection, command)

    def _eval_bound(self, connection: AbstractConnection, script: BoundLua,
                    keys: list[Any], args: list[Any]) -> Any:
        try:
            return _send(connection, ("EVALSHA", script.on(self._local.epoch).sha,
                                      len(keys), *keys, *args))
        except NoScriptError:
            pass
        # This server lacks the copy, so it may not be the server this connection
        # learned (a proxy moved it): learn again, then send that server's copy whole.
        self._learn_server(connection)
        return _send(connection, ("EVAL", script.on(self._local.epoch).text, len(keys),
                                  *keys, *args))

    def close(self) -> None:
        """Disconnect every connection this process opened (another thread's next
        command connects again)."""
        for connection in list(self._opened):
            if connection.pid == os.getpid():
                connection.disconnect()


def _socket(connection: AbstractConnection) -> Any:
    """The connection's socket, ``None`` while disconnected. redis-py keeps it in
    ``_sock`` (from 4.x to 8.x, on TCP, TLS and Unix connections alike); this is the
    one private name used here."""
    return getattr(connection, "_sock", None)


def _write(connection: AbstractConnection, command: tuple[Any, ...]) -> None:
    """Send one command, packed by hiredis in one call (byte for byte what redis-py's
    packer makes of str, bytes and int arguments; a bool is refused, as redis-py
    refuses it). The readiness of the connection was checked by ``_connection``, so
    the client's own health check is not run again."""
    packed: Any = [hiredis.pack_command(command)]  # bytes (redis-py's stubs say str)
    connection.send_packed_command(packed, check_health=False)


def _send(connection: AbstractConnection, command: tuple[Any, ...]) -> Any:
    _write(connection, command)
    return connection.read_response()
