"""Worker processes for tests: started for real, always stopped at teardown.

Every test helper that starts a process lives here, so cleanup lives in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orchestrator
from config import Settings
from orchestrator.devstack.processes import WorkerProcess


class Fleet:
    """The workers a test started; ``stop_all`` runs at teardown whatever happened."""

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.workers: list[WorkerProcess] = []

    def start(self, queues: str, **kwargs: Any) -> WorkerProcess:
        worker = WorkerProcess(self.env, queues, log_dir=self.log_dir, **kwargs)
        self.workers.append(worker)
        return worker.start()

    def start_all_profiles(self) -> list[WorkerProcess]:
        return [
            self.start("agents", pool="prefork", concurrency=2),
            self.start("llm", pool="threads", concurrency=16),
            self.start("tools", pool="threads", concurrency=8),
        ]

    def stop_all(self, timeout: float = 3.0) -> None:
        """Warm shutdown for ``timeout`` seconds (a held LLM call may not finish), then
        SIGKILL: tests need no graceful end, only a certain one."""
        for worker in self.workers:
            worker.stop(timeout=timeout)

    def use(self, settings: Settings, **updates: object) -> Settings:
        """Settings changed by ``updates``, pinned in this process and handed to every
        worker started from now on."""
        configured = settings.model_copy(update=updates)
        orchestrator.configure(configured)
        self.env.update(configured.environment())
        return configured

    def logs(self) -> str:
        return "\n\n".join(f"== {w.name}\n{w.log_tail()}" for w in self.workers)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate()`` until true or ``timeout``; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
