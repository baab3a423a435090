"""Process-wide resources, created lazily and forgotten across ``fork``.

Nothing here does I/O at import. ``configure(settings)`` pins the settings (the CLI does
it after starting embedded services); otherwise they are read from ``ORCH_*`` on first use.
A forked child (a prefork worker process) starts with no engine, pool or client, so no
socket is ever shared between processes.
"""

from __future__ import annotations

import importlib
import os
import socket
import threading
from functools import cached_property
from typing import TYPE_CHECKING

from config import InvalidSettings, Settings, build_celery_config, load_settings
from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import redis
    from celery import Celery
    from sqlalchemy import Engine

    from orchestrator.admission import Admission
    from orchestrator.breaker import Breakers
    from orchestrator.inflight import InFlight
    from orchestrator.llm.gateway import Gateway
    from orchestrator.state.router import StateRouter
    from orchestrator.state.writeback import Shard
    from orchestrator.store.invocations import InvocationStore


class Runtime:
    """Settings plus the clients built from them, for one process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._workflows_loaded = False
        self._lock = threading.Lock()

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
    def store(self) -> InvocationStore:
        from orchestrator.store.invocations import InvocationStore

        return InvocationStore(self.engine)

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

    @cached_property
    def state(self) -> StateRouter:
        from orchestrator.state.durable import DurableState
        from orchestrator.state.router import StateRouter
        from orchestrator.state.writeback import WriteBackState

        durable = DurableState(self.engine)
        writeback = None
        if self.settings.state_write_back_prefixes:
            writeback = WriteBackState(self.state_shards, durable,
                                       dirty_limit=self.settings.state_dirty_limit)
        return StateRouter(durable, writeback, self.settings.state_write_back_prefixes)

    @cached_property
    def breakers(self) -> Breakers:
        from orchestrator.breaker import Breakers

        return Breakers(self.redis, owner_id, enabled=self.settings.breakers_enabled)

    @cached_property
    def tool_threads(self) -> ThreadPoolExecutor:
        """Threads that run callable tools under their timeouts."""
        from concurrent.futures import ThreadPoolExecutor

        return ThreadPoolExecutor(max_workers=64, thread_name_prefix="tool")

    @cached_property
    def admission(self) -> Admission:
        from orchestrator.admission import Admission

        return Admission(self.redis, self.settings)

    @cached_property
    def llm(self) -> Gateway:
        """The LLM gateway of this process (its limiters are shared fleet-wide)."""
        from orchestrator.llm.gateway import Gateway

        return Gateway(self.settings, self.redis, self.http, self.breakers)

    @cached_property
    def inflight(self) -> InFlight:
        from orchestrator.inflight import InFlight

        return InFlight(self.redis, visibility_timeout=self.settings.visibility_timeout)

    def load_workflows(self) -> None:
        """Import ``ORCH_WORKFLOW_MODULES`` once, so the workflow registry is filled."""
        if self._workflows_loaded:
            return
        with self._lock:
            for module in self.settings.workflow_modules:
                try:
                    importlib.import_module(module)
                except ImportError as exc:
                    raise ConfigError(
                        f"ORCH_WORKFLOW_MODULES: cannot import {module!r}: {exc}"
                    ) from exc
            self._workflows_loaded = True

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
        if "tool_threads" in cached:
            cached["tool_threads"].shutdown(wait=False, cancel_futures=True)
        for shard in cached.get("state_shards", []):
            shard.client.close()
        for name in _RESOURCES:
            cached.pop(name, None)


_RESOURCES = ("engine", "store", "redis", "producer", "http", "inflight", "llm", "admission",
              "breakers", "state", "state_shards", "tool_threads")
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


def owner_id() -> str:
    """Who holds a step claim: host, process and thread (unique across the fleet)."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def owner_is_dead(owner: str) -> bool:
    """True when ``owner`` was a process on this host that no longer exists."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


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
    runtime._lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
