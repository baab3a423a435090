"""What the benchmark scripts share: a progress bar, a wide console, a headless pyplot."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from config import Settings, load_settings
from orchestrator.devstack.processes import WorkerProcess


def console() -> Console:
    """Wide enough for the result tables when the output is a file or a pipe."""
    return Console(width=150)


def progress(out: Console, *, counts: bool = False) -> Progress:
    columns: list[Any] = [TextColumn("{task.description}"), BarColumn()]
    if counts:
        columns.append(MofNCompleteColumn())
    columns.append(TimeElapsedColumn())
    return Progress(*columns, console=out)


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


REPO = Path(__file__).resolve().parents[1]
# The benchmark workloads (``tests.workloads``) are imported from the repository root.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
WORKLOADS = "tests.workloads"


def bench_settings() -> Settings:
    """The settings from ``ORCH_*``, with the benchmark workloads registered too."""
    settings = load_settings()
    modules = [*settings.workflow_modules]
    if WORKLOADS not in modules:
        modules.append(WORKLOADS)
    return settings.model_copy(update={"workflow_modules": modules})


def plain_celery_worker(app_module: str, queue: str, env: Mapping[str, str], *, pool: str,
                        concurrency: int, log_dir: Path, name: str,
                        events: bool = False) -> WorkerProcess:
    """A plain Celery worker of ``app_module`` (a baseline: not the fleet's profile),
    one message prefetched per slot, as the fleet's workers have; ``events``: task events
    on (``-E``, as the fleet's workers run them for Flower)."""
    command = [sys.executable, "-m", "celery", "-A", app_module, "worker", "-Q", queue,
               "--pool", pool, "--concurrency", str(concurrency), "--prefetch-multiplier",
               "1", "--loglevel", "WARNING", "--hostname", f"{name}@%h", "--without-gossip",
               "--without-mingle"] + (["-E"] if events else [])
    return WorkerProcess(env, queue, log_dir=log_dir, name=name, command=command)
