"""``orchestrator worker``: become a Celery worker of a queue's profile, by exec, so signals
(Ctrl-C, SIGTERM for a warm shutdown) reach Celery directly."""

from __future__ import annotations

import os
import sys

from orchestrator import runtime


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
