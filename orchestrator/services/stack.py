"""The services a fleet needs: the configured ones, or embedded ones started here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from config import Settings
from orchestrator.services.postgres_server import EmbeddedPostgres
from orchestrator.services.redis_server import EmbeddedRedis


@contextmanager
def service_stack(settings: Settings) -> Iterator[Settings]:
    """Yield ``settings`` with both service URLs filled in: as configured, or pointing at
    embedded servers under ``ORCH_DATA_DIR`` that stop when the block ends."""
    with ExitStack() as stack:
        redis_url = settings.redis_url
        database_url = settings.database_url
        if redis_url is None:
            redis_url = stack.enter_context(EmbeddedRedis(settings.data_dir / "redis")).url
        if database_url is None:
            database_url = stack.enter_context(
                EmbeddedPostgres(settings.data_dir / "postgres")).url
        yield settings.with_services(redis_url=redis_url, database_url=database_url)
