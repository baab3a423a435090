"""``orchestrator worker`` and ``orchestrator flower``: exec into Celery, so signals
(Ctrl-C, SIGTERM for a warm shutdown) reach it directly."""

from __future__ import annotations

import os
import sys

from orchestrator import runtime
from orchestrator.errors import ConfigError


def run_worker(*, queues: str, concurrency: int | None, pool: str | None,
               loglevel: str) -> None:
    """Replace this process with a Celery worker of the profile for ``queues``:
    ``python -m workers`` checks the options and builds the command line."""
    runtime.current().redis_url  # noqa: B018 - a missing broker URL fails here, clearly
    argv = [sys.executable, "-m", "workers", "--queues", queues, "--loglevel", loglevel]
    if pool is not None:
        argv += ["--pool", pool]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
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
