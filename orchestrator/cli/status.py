"""``orchestrator status``: what the fleet is doing right now."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from config.celery import QUEUES
from orchestrator import subsystems


def collect() -> dict[str, Any]:
    """Queue depths (Redis), live workers (Celery ping) and invocations by status."""
    sub = subsystems.current()
    rt = sub.runtime
    depths = {queue: int(rt.redis.llen(queue)) for queue in QUEUES}
    replies = rt.producer.control.ping(timeout=1.0) or []
    workers = sorted(name for reply in replies for name in reply)
    return {"queues": depths, "workers": workers, "invocations": sub.store.counts()}


def show_status(*, as_json: bool) -> None:
    data = collect()
    console = Console()
    if as_json:
        console.print_json(json.dumps(data))
        return
    queues = Table(title="queues")
    queues.add_column("queue")
    queues.add_column("depth", justify="right")
    for name, depth in data["queues"].items():
        queues.add_row(name, str(depth))
    console.print(queues)
    invocations = Table(title="invocations")
    invocations.add_column("status")
    invocations.add_column("count", justify="right")
    for name, count in sorted(data["invocations"].items()):
        invocations.add_row(name, str(count))
    console.print(invocations)
    console.print(f"workers online: {len(data['workers'])}")
    for name in data["workers"]:
        console.print(f"  {name}")
