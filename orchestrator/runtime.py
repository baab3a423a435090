"""The connections of one process, created lazily and forgotten across ``fork``.

This module holds connections only: the SQLAlchemy engine, Redis clients (the broker's
and the memory-layer shards'), the HTTP client and the Celery producer. The subsystems
built from them live in :mod:`orchestrator.subsystems`.

Nothing here does I/O at import. ``configure(settings)`` pins the settings (the CLI does
it after starting embedded services); otherwise they are read from ``ORCH_*`` on first use.
A forked child (a prefork worker process) starts with no engine, pool or client, so no
socket is ever shared between processes.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from config import InvalidSettings, Settings, build_celery_config, load_settings
from config.masking import mask_text
from orchestrator.errors import (
    ConfigError,
    OrchestratorError,
    ServiceMisconfigured,
    ServiceUnavailable,
)

if TYPE_CHECKING:
    import httpx
    import redis
    from celery import Celery
    from sqlalchemy import Engine

    from orchestrator.state.writeback import Shard


class Runtime:
    """Settings plus the clients built from them, for one process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Bumped whenever the connections are dropped (close, fork), so whatever was
        # built from the old ones knows to build anew.
        self.generation = 0

    @property
    def redis_url(self) -> str:
        if not self.settings.redis_url:
            raise ConfigError(
                "ORCH_REDIS_URL is not set: start the stack with `orchestrator up`, "
                "or point ORCH_REDIS_URL at a Redis server (redis://host:6379/0)"
            )
        return self.settings.redis_url

    @property
    def database_url(self) -> str:
        if not self.settings.database_url:
            raise ConfigError(
                "ORCH_DATABASE_URL is not set: start the stack with `orchestrator up`, or "
                "point it at PostgreSQL (postgresql+psycopg://user@host:5432/db)"
            )
        return self.settings.database_url

    @cached_property
    def engine(self) -> Engine:
        from orchestrator.store.engine import make_engine

        return make_engine(self.database_url)

    @cached_property
    def redis(self) -> redis.Redis:
        import redis as redis_lib

        return redis_lib.Redis.from_url(
            self.redis_url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )

    @cached_property
    def producer(self) -> Celery:
        """A Celery app for sending only; workers use ``workers.app``."""
        from celery import Celery

        app = Celery("orchestrator-producer", set_as_current=False)
        app.conf.update(build_celery_config(self.settings.with_services(
            redis_url=self.redis_url, database_url=self.settings.database_url or "")))
        return app

    @cached_property
    def http(self) -> httpx.Client:
        """One pooled HTTP client per process, for LLM providers and tools."""
        import httpx

        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        return httpx.Client(limits=limits, timeout=httpx.Timeout(30.0), follow_redirects=False)

    @cached_property
    def state_shards(self) -> list[Shard]:
        """The memory-layer shards: ``ORCH_STATE_REDIS_URLS``, else the broker's Redis."""
        import redis as redis_lib

        from orchestrator.state.writeback import Shard

        urls = self.settings.shard_urls or [self.redis_url]
        return [Shard(url, redis_lib.Redis.from_url(url, socket_timeout=10,
                                                     socket_connect_timeout=5))
                for url in urls]

    def close(self) -> None:
        """Close pools and clients this process opened."""
        cached = self.__dict__
        if "engine" in cached:
            cached["engine"].dispose()
        if "redis" in cached:
            cached["redis"].close()
        if "producer" in cached:
            cached["producer"].close()
        if "http" in cached:
            cached["http"].close()
        for shard in cached.get("state_shards", []):
            shard.close()
        for name in _RESOURCES:
            cached.pop(name, None)
        self.generation += 1


_RESOURCES = ("engine", "redis", "producer", "http", "state_shards")
_current: Runtime | None = None
_current_lock = threading.Lock()


def configure(settings: Settings | None = None) -> Runtime:
    """Use ``settings`` (or read the environment) from now on in this process.

    Raises ``ConfigError`` naming the variable when the environment is invalid.
    """
    global _current
    if settings is None:
        try:
            settings = load_settings()
        except InvalidSettings as exc:
            raise ConfigError(str(exc)) from None
    with _current_lock:
        if _current is not None:
            _current.close()
        _current = Runtime(settings)
        return _current


def current() -> Runtime:
    """The runtime of this process, configured from the environment on first use."""
    runtime = _current
    if runtime is None:
        return configure()
    return runtime


def _forget_after_fork() -> None:
    # The parent's sockets belong to the parent: drop references, close nothing.
    global _current
    runtime = _current
    if runtime is None:
        return
    if "engine" in runtime.__dict__:
        runtime.__dict__["engine"].dispose(close=False)
    for name in _RESOURCES:
        runtime.__dict__.pop(name, None)
    runtime.generation += 1


os.register_at_fork(after_in_child=_forget_after_fork)


# The settings that hold service addresses, as the environment names them.
REDIS_VARIABLE = "ORCH_REDIS_URL"
DATABASE_VARIABLE = "ORCH_DATABASE_URL"
SHARDS_VARIABLE = "ORCH_STATE_REDIS_URLS"

# What a driver's message says, what that means (None: an outage), and what to check.
# Checked in order; the first fragment found wins.
_POSTGRES_CAUSES: tuple[tuple[str, str, str | None], ...] = (
    ("password authentication failed", "refused the login (password authentication "
     "failed)", "check the user and password in the URL"),
    ("no password supplied", "wants a password", "put it in the URL, after the user "
     "name's ':' and before the '@'"),
    ("pg_hba.conf", "refused this host, user or database (pg_hba.conf)",
     "check the user and database in the URL, or the server's pg_hba.conf"),
    ("failed to resolve host", "has a host name that does not resolve",
     "check the host in the URL"),
    ("could not translate host name", "has a host name that does not resolve",
     "check the host in the URL"),
    ("connection refused", "refused the connection (connection refused)", None),
    ("timeout expired", "did not answer in time (timed out)", None),
    ("timed out", "did not answer in time (timed out)", None),
    ("starting up", "is starting up", None),
    ("shutting down", "is shutting down", None),
    ("recovery mode", "is in recovery", None),
    ("too many", "has no connection slot left (too many connections)", None),
    ("connection slots", "has no connection slot left (too many connections)", None),
    ("closed the connection", "closed the connection", None),
    ("terminating connection", "closed the connection", None),
    ("connection is closed", "closed the connection", None),
)
_MISSING = re.compile(r'(database|role) "([^"]*)" does not exist')


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts (drivers and kombu wrap each other)."""
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen and len(seen) < 20:
        seen.add(id(found))
        yield found
        found = found.__cause__ or found.__context__


def _redis_cause(exc: BaseException) -> tuple[str, str | None] | None:
    """(what happened, what to check; None for an outage) for a Redis client error that
    is about reaching the server, else None."""
    import redis.exceptions as rex

    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, rex.AuthenticationError) or any(
            word in text for word in ("NOAUTH", "WRONGPASS", "HELLO must be called")):
        if "no password is set" in lowered or "without any password" in lowered:
            return ("has no password set but the URL gives one",
                    "remove the password from the URL")
        if any(word in lowered for word in ("hello must be called", "noauth",
                                            "authentication required")):
            return ("wants a password", "put it in the URL, after the user name's ':' "
                    "and before the '@'")
        return "refused the password", "check the password in the URL"
    if "db index is out of range" in lowered:
        return "has no such database number", "check the /N at the end of the URL"
    if isinstance(exc, rex.BusyLoadingError):
        return "is loading its data", None
    if isinstance(exc, rex.TimeoutError):
        return "did not answer in time (timed out)", None
    if isinstance(exc, rex.ConnectionError):
        if "name or service not known" in lowered or "name resolution" in lowered:
            return "has a host name that does not resolve", "check the host in the URL"
        if "refused" in lowered:
            return "refused the connection (connection refused)", None
        return "could not be reached (connection lost)", None
    return None


def _postgres_cause(exc: BaseException) -> tuple[str, str | None] | None:
    import psycopg
    import sqlalchemy.exc as sqlexc

    orig = exc.orig if isinstance(exc, sqlexc.DBAPIError) else exc
    if isinstance(orig, psycopg.errors.UndefinedTable):
        return ("has no orchestrator tables",
                "run `orchestrator db upgrade` against it, or check the database name")
    if not isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError) or isinstance(
            orig, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
        return None
    text = str(orig)
    missing = _MISSING.search(text)
    if missing:
        return (f"has no {missing.group(1)} {missing.group(2)!r}",
                f"create it, or fix the {missing.group(1)} name in the URL")
    lowered = text.lower()
    for fragment, what, check in _POSTGRES_CAUSES:
        if fragment in lowered:
            return what, check
    detail = mask_text(text.strip().splitlines()[0] if text.strip() else type(orig).__name__)
    return f"could not be reached ({detail[-160:]})", None


def _address(url: str) -> tuple[str, int | None]:
    try:
        parts = urlsplit(url)
        return parts.hostname or "", parts.port
    except ValueError:
        return "", None


def _redis_setting(settings: Settings, exc: BaseException) -> tuple[str, str]:
    """Which Redis setting a client error came from: a memory-layer shard when the
    error names one's address (and it is not the broker's), else the broker."""
    broker = settings.redis_url or ""
    text = str(exc)
    for url in settings.state_redis_urls:
        host, port = _address(url)
        if host and (host, port) != _address(broker) and f"{host}:{port or 6379}" in text:
            return SHARDS_VARIABLE, url
    return REDIS_VARIABLE, broker


def service_failure(exc: BaseException, *, variable: str | None = None,
                    url: str | None = None) -> OrchestratorError | None:
    """The orchestrator error for ``exc`` when it is a failure to reach Redis or
    PostgreSQL (``exc`` or any error it wraps); None for any other error.

    An outage (refused, timed out, connection lost) becomes :class:`ServiceUnavailable`,
    a reason in the configuration (credentials refused, unknown host, no such database,
    no tables) :class:`ServiceMisconfigured`. Either message is one line naming the
    variable (``variable``, else the setting the driver points to), the address (``url``,
    else that setting's value) with its password masked, and what to check.
    """
    try:
        settings: Settings | None = current().settings
    except OrchestratorError:
        settings = None
    for found in _chain(exc):
        cause = _redis_cause(found)
        service = "Redis"
        if cause is None:
            cause = _postgres_cause(found)
            service = "PostgreSQL"
        if cause is None:
            continue
        name, address = variable, url
        if name is None:
            if service == "PostgreSQL":
                name = DATABASE_VARIABLE
            elif settings is not None:
                name, address = _redis_setting(settings, found)
            else:
                name = REDIS_VARIABLE
        if address is None and settings is not None:
            address = {REDIS_VARIABLE: settings.redis_url,
                       DATABASE_VARIABLE: settings.database_url,
                       SHARDS_VARIABLE: ",".join(settings.state_redis_urls)}.get(name)
        shown = mask_text(address) if address else "(not set)"
        what, check = cause
        if check is None:
            return ServiceUnavailable(
                f"{name}: {service} at {shown} {what}: check that it is running and "
                f"reachable from here, or point {name} at one that is",
                variable=name, address=shown)
        return ServiceMisconfigured(f"{name}: {service} at {shown} {what}: {check}",
                                    variable=name, address=shown)
    return None


@contextmanager
def reaching(variable: str | None = None, url: str | None = None) -> Iterator[None]:
    """Turn a failure to reach Redis or PostgreSQL inside the block into
    :class:`ServiceUnavailable` or :class:`ServiceMisconfigured` (see
    :func:`service_failure`); every other error passes unchanged."""
    try:
        yield
    except OrchestratorError:
        raise
    except Exception as exc:
        failure = service_failure(exc, variable=variable, url=url)
        if failure is None:
            raise
        raise failure from exc
