"""``orchestrator worker`` and ``orchestrator flower``: exec into Celery, so signals
(Ctrl-C, SIGTERM for a warm shutdown) reach it directly."""

from __future__ import annotations

import os
import sys

from orchestrator import runtime
from orchestrator.errors import ConfigError
from workers.profiles import for_queues


def run_worker(*, queues: str, concurrency: int | None, pool: str | None,
               loglevel: str) -> None:
    """Replace this process with a Celery worker of the profile for ``queues``."""
    settings = runtime.current().settings
    runtime.current().redis_url  # noqa: B018 - a missing broker URL fails here, clearly
    try:
        profile = for_queues(settings, [q.strip() for q in queues.split(",") if q.strip()],
                             pool=pool, concurrency=concurrency)
    except ValueError as exc:
        raise ConfigError(f"--queues/--pool/--concurrency: {exc}") from None
    argv = [sys.executable, "-m", "celery", *profile.argv(loglevel=loglevel)]
    os.execv(sys.executable, argv)


def run_flower(*, port: int, address: str) -> None:
    """Replace this process with Flower, its basic auth passed by environment, not argv."""
    settings = runtime.current().settings
    runtime.current().redis_url  # noqa: B018
    if not settings.flower_user or settings.flower_password is None:
        raise ConfigError(
            "ORCH_FLOWER_USER and ORCH_FLOWER_PASSWORD must be set: Flower shows task "
            "payloads and can revoke tasks, so it never runs without a login"
        )
    env = dict(os.environ)
    password = settings.flower_password.get_secret_value()
    env["FLOWER_BASIC_AUTH"] = f"{settings.flower_user}:{password}"
    argv = [sys.executable, "-m", "celery", "-A", "workers.app", "flower",
            f"--port={port}", f"--address={address}"]
    os.execve(sys.executable, argv, env)
