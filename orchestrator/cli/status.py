"""``orchestrator status``: what the fleet is doing right now."""

from __future__ import annotations

from orchestrator import subsystems
from orchestrator.cli.output import out, table
from orchestrator.ops.fleet_status import fleet_status


def show_status(*, as_json: bool) -> None:
    status = fleet_status(subsystems.current())
    if as_json:
        out.print_json(data=status.as_json())
        return
    out.print(table("queues", ["queue", "depth"],
                    [(name, str(depth)) for name, depth in status.queues.items()],
                    right=["depth"]))
    out.print(table("invocations", ["status", "count"],
                    [(name, str(count)) for name, count in sorted(status.invocations.items())],
                    right=["count"]))
    out.print(f"workers online: {len(status.workers)}")
    for name in status.workers:
        out.print(f"  {name}")
