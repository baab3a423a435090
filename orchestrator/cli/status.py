"""``orchestrator status``: what the fleet is doing right now."""

from __future__ import annotations

from typing import Any

from config.celery import QUEUES
from orchestrator import subsystems
from orchestrator.cli.output import out, table


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
    if as_json:
        out.print_json(data=data)
        return
    out.print(table("queues", ["queue", "depth"],
                    [(name, str(depth)) for name, depth in data["queues"].items()],
                    right=["depth"]))
    out.print(table("invocations", ["status", "count"],
                    [(name, str(count)) for name, count in sorted(data["invocations"].items())],
                    right=["count"]))
    out.print(f"workers online: {len(data['workers'])}")
    for name in data["workers"]:
        out.print(f"  {name}")
