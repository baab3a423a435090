"""The Celery app of the fleet: ``celery -A workers.app worker -Q llm`` works as is.

Configured from ``ORCH_*`` through :mod:`config`; imports no service at import time.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from celery import Celery, signals

from config import build_celery_config
from orchestrator import logs, runtime, subsystems
from orchestrator.errors import ConfigError
from workers.liveness import ConsumerLiveness
from workers.pause import QueuePauses
from workers.transport import TRANSPORT

_settings = runtime.current().settings
if not _settings.redis_url:
    raise ConfigError(
        "ORCH_REDIS_URL is not set: workers need the broker's address "
        "(use `orchestrator up`, or export ORCH_REDIS_URL=redis://host:6379/0)"
    )

app = Celery("orchestrator", include=["tasks.steps"])
app.conf.update(build_celery_config(_settings))
# Every worker follows the fleet's paused queues (`orchestrator pause`), for its own
# queues only: see workers/pause.py.
app.steps["consumer"].add(QueuePauses)
# A consumer that lost its broker reconnects (workers/transport.py makes kombu's Redis
# channel close cleanly when the broker went away mid-BRPOP); one that still does not
# consume again within ORCH_WORKER_STALL_EXIT_SECONDS exits for its supervisor to restart
# it (workers/liveness.py).
if urlsplit(_settings.redis_url).scheme == "redis":
    app.conf.broker_transport = TRANSPORT
app.steps["consumer"].add(ConsumerLiveness)


@signals.setup_logging.connect
def _on_setup_logging(loglevel: int | None = None, **_: Any) -> None:
    # Ours instead of Celery's: each line of a step names it, in ORCH_LOG_FORMAT.
    logs.configure(_settings.log_format, level=loglevel or logging.INFO)


@signals.worker_init.connect
def _on_worker_init(**_: Any) -> None:
    from workers import preflight

    preflight.load_workflows_or_exit()
    preflight.warn_on_eviction()


@signals.worker_process_init.connect
def _on_process_init(**_: Any) -> None:
    # A fresh prefork child: its own pools, and its step runner (workflows imported)
    # built before the first task.
    subsystems.current().runner  # noqa: B018


@signals.worker_process_shutdown.connect
def _on_process_shutdown(**_: Any) -> None:
    subsystems.current().close()


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    subsystems.current().close()
