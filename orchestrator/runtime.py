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
import threading
from functools import cached_property
from typing import TYPE_CHECKING

from config import InvalidSettings, Settings, build_celery_config, load_settings
from orchestrator.errors import ConfigError

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
            shard.client.close()
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
