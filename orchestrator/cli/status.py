"""``orchestrator status``: what the fleet is doing right now."""

from __future__ import annotations

from rich.markup import escape

from orchestrator import subsystems
from orchestrator.cli.output import out, table
from orchestrator.ops.fleet_status import fleet_status
from orchestrator.ops.queues import Pause


def show_status(*, as_json: bool) -> None:
    status = fleet_status(subsystems.current())
    if as_json:
        out.print_json(data=status.as_json())
        return
    out.print(table("queues", ["queue", "depth", "paused", "parked", "consumers"],
                    [(q.queue, str(q.depth), _paused(q.pause), str(q.parked),
                      str(len(q.consumers)) if q.consumers else "[red]none[/]")
                     for q in status.queues],
                    right=["depth", "parked", "consumers"]))
    out.print(table("invocations", ["status", "count"],
                    [(name, str(count)) for name, count in sorted(status.invocations.items())],
                    right=["count"]))
    out.print(f"workers online: {len(status.workers)}")
    for name in status.workers:
        out.print(f"  {name}")
    held = {shard: q for shard, q in status.state_quarantine.items() if q.count}
    if held:
        total = sum(q.count for q in held.values())
        out.print(table(
            f"state records quarantined: {total} (PostgreSQL refused them; they stay in "
            "Redis, unflushed, until the key is written again)", ["shard", "key", "reason"],
            [(escape(shard), escape(key), escape(reason)) for shard, q in held.items()
             for key, reason in q.records.items()]))


def _paused(pause: Pause | None) -> str:
    if pause is None:
        return "no"
    why = f": {escape(pause.reason)}" if pause.reason else ""
    return f"[yellow]paused[/] by {escape(pause.by)} at {pause.at:%Y-%m-%d %H:%M:%S}Z{why}"
