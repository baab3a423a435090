"""Worker profiles: which queue, which pool, how many slots, how much prefetch.

- ``agents``: python steps, CPU-bound or short: prefork, one process per core, prefetch 1
  so a killed process strands at most the message it was running.
- ``llm``: calls that mostly wait on a provider (hundreds of ms to seconds): a thread pool,
  because waiting threads cost little memory and no CPU, and the fleet-wide limiter, not
  the pool size, decides how many calls reach the provider at once.
- ``tools``: HTTP tool calls, also waiting on I/O: threads.
"""

from __future__ import annotations

from dataclasses import dataclass

from config import Settings
from config.celery import AGENTS_QUEUE, LLM_QUEUE, TOOLS_QUEUE


@dataclass(frozen=True)
class WorkerProfile:
    name: str
    queues: tuple[str, ...]
    pool: str
    concurrency: int
    prefetch_multiplier: int = 1

    def argv(self, *, hostname: str | None = None, loglevel: str = "INFO") -> list[str]:
        """The ``celery worker`` arguments for this profile."""
        args = [
            "-A", "workers.app", "worker",
            "-Q", ",".join(self.queues),
            "--pool", self.pool,
            "--concurrency", str(self.concurrency),
            "--prefetch-multiplier", str(self.prefetch_multiplier),
            "--loglevel", loglevel,
            "-E",
        ]
        if hostname:
            args += ["--hostname", hostname]
        return args


POOLS = ("prefork", "threads", "solo", "gevent", "eventlet")


def profiles(settings: Settings) -> dict[str, WorkerProfile]:
    """One profile per queue, sized from the settings."""
    return {
        AGENTS_QUEUE: WorkerProfile(AGENTS_QUEUE, (AGENTS_QUEUE,), "prefork",
                                    settings.agents_concurrency),
        LLM_QUEUE: WorkerProfile(LLM_QUEUE, (LLM_QUEUE,), "threads",
                                 settings.llm_worker_concurrency),
        TOOLS_QUEUE: WorkerProfile(TOOLS_QUEUE, (TOOLS_QUEUE,), "threads",
                                   settings.tools_worker_concurrency),
    }


def for_queues(
    settings: Settings, queues: list[str], *, pool: str | None = None,
    concurrency: int | None = None,
) -> WorkerProfile:
    """A profile consuming ``queues``: the first queue's defaults, overridden as given."""
    known = profiles(settings)
    unknown = [q for q in queues if q not in known]
    if not queues or unknown:
        raise ValueError(
            f"unknown queue(s) {', '.join(unknown) or '(none given)'}: "
            f"choose from {', '.join(known)}"
        )
    if pool is not None and pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}: choose from {', '.join(POOLS)}")
    if concurrency is not None and concurrency <= 0:
        raise ValueError(f"concurrency must be a positive whole number, got {concurrency}")
    base = known[queues[0]]
    return WorkerProfile(
        name="-".join(queues),
        queues=tuple(queues),
        pool=pool or base.pool,
        concurrency=concurrency or base.concurrency,
    )
