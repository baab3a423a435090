"""The services a fleet needs: the configured ones, or embedded ones started here."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from config import Settings
from config.masking import mask_url
from orchestrator.devstack.servers.postgres_server import EmbeddedPostgres
from orchestrator.devstack.servers.redis_server import EmbeddedRedis


@dataclass(frozen=True)
class ServiceInfo:
    """One service a fleet uses: a configured one (``embedded`` false, the rest ``None``)
    or one started here (with its pid, data directory, log and start time)."""

    name: str
    url: str
    embedded: bool
    pid: int | None = None
    data_dir: Path | None = None
    log_path: Path | None = None
    started_in: float | None = None

    def describe(self) -> str:
        """One line for people, e.g. ``Redis (embedded, pid 42) at redis://...``;
        passwords are hidden."""
        if not self.embedded:
            return f"{self.name} (configured) at {mask_url(self.url)}"
        took = f", started in {self.started_in:.2f}s" if self.started_in is not None else ""
        return (f"{self.name} (embedded, pid {self.pid}{took}) at {mask_url(self.url)}; "
                f"data {self.data_dir}, log {self.log_path}")


@dataclass(frozen=True)
class ServiceStack:
    """What :func:`started_services` yields: settings with both URLs set, and the services."""

    settings: Settings
    services: tuple[ServiceInfo, ...]

    @property
    def embedded(self) -> tuple[ServiceInfo, ...]:
        return tuple(service for service in self.services if service.embedded)


def _start(name: str, server: EmbeddedRedis | EmbeddedPostgres,
           stack: ExitStack) -> ServiceInfo:
    began = time.monotonic()
    stack.enter_context(server)
    return ServiceInfo(name, server.url, embedded=True, pid=server.pid,
                       data_dir=server.data_dir, log_path=server.log_path,
                       started_in=time.monotonic() - began)


@contextmanager
def started_services(settings: Settings) -> Iterator[ServiceStack]:
    """Resolve Redis and PostgreSQL for ``settings``, starting what is not configured.

    A set ``redis_url``/``database_url`` is used as given (nothing is started or checked);
    an unset one gets an embedded server under ``settings.data_dir`` (``redis``,
    ``postgres``; database ``orchestrator``), stopped when the block exits, however it
    exits. Raises :class:`~orchestrator.errors.ServiceError` when one cannot start; any
    already started are stopped first.
    """
    with ExitStack() as stack:
        if settings.redis_url is not None:
            redis = ServiceInfo("Redis", settings.redis_url, embedded=False)
        else:
            redis = _start("Redis", EmbeddedRedis(settings.data_dir / "redis"), stack)
        if settings.database_url is not None:
            postgres = ServiceInfo("PostgreSQL", settings.database_url, embedded=False)
        else:
            postgres = _start("PostgreSQL", EmbeddedPostgres(settings.data_dir / "postgres"), stack)
        yield ServiceStack(
            settings.with_services(redis_url=redis.url, database_url=postgres.url),
            (redis, postgres))


@contextmanager
def service_stack(settings: Settings) -> Iterator[Settings]:
    """Yield a copy of ``settings`` with ``redis_url`` and ``database_url`` filled in.

    Same contract as :func:`started_services`, for callers that need only the settings.
    """
    with started_services(settings) as services:
        yield services.settings
