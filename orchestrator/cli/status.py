"""``orchestrator status``: what the fleet is doing right now, on one screen of tables."""

from __future__ import annotations

from rich.markup import escape

from orchestrator import subsystems
from orchestrator.cli.output import out, table
from orchestrator.ops.fleet_status import FleetStatus, fleet_status
from orchestrator.ops.queues import Pause

COLORS = {"closed": "green", "open": "red", "half-open": "yellow", "usable": "green",
          "cooling": "yellow", "probing": "yellow", "out": "red"}


def show_status(*, as_json: bool) -> None:
    status = fleet_status(subsystems.current())
    if as_json:
        out.print_json(data=status.as_json())
        return
    _queues_and_workers(status)
    _work(status)
    _dependencies(status)


def _queues_and_workers(status: FleetStatus) -> None:
    out.print(table("queues", ["queue", "depth", "paused", "parked", "consumers"],
                    [(q.queue, str(q.depth), _paused(q.pause), str(q.parked),
                      str(len(q.consumers)) if q.consumers else "[red]none[/]")
                     for q in status.queues],
                    right=["depth", "parked", "consumers"]))
    out.print(table(f"workers online ({len(status.workers)})",
                    ["worker", "queues", "pool", "concurrency"],
                    [(escape(w.name), ", ".join(w.queues) or "[yellow]none (paused)[/]",
                      w.pool, str(w.concurrency or "?")) for w in status.workers],
                    right=["concurrency"]))


def _work(status: FleetStatus) -> None:
    statuses = sorted(set(status.invocations) | set(status.last_hour))
    out.print(table("invocations", ["status", "last hour", "all"],
                    [(name, str(status.last_hour.get(name, 0)),
                      str(status.invocations.get(name, 0))) for name in statuses],
                    right=["last hour", "all"]))
    if status.stalled:
        shown = ", ".join(status.stalled[:10]) + (" ..." if len(status.stalled) > 10 else "")
        out.print(f"[yellow]stalled (the reconciler acts on them):[/] {len(status.stalled)}: "
                  f"{shown}", highlight=False)
    else:
        out.print("stalled: none")
    if status.dead_letters:
        out.print(table("dead letters, last hour (orchestrator dlq list)", ["cause", "count"],
                        [(escape(c), str(n)) for c, n in status.dead_letters.items()],
                        right=["count"]))


def _dependencies(status: FleetStatus) -> None:
    if status.breakers:
        out.print(table("breakers", ["breaker", "state", "error rate", "next probe"],
                        [(b.name, _color(b.state), f"{b.error_rate:.0%}",
                          "forced" if b.forced else
                          "-" if b.next_probe_in is None else f"{b.next_probe_in:.1f}s")
                         for b in status.breakers]))
    out.print(table("LLM keys", ["provider", "key", "state", "in flight", "requests left",
                                 "tokens left"],
                    [(k.provider, k.key, _color(k.state.value), f"{k.in_flight}/{k.concurrency}",
                      str(k.requests_left), str(k.tokens_left)) for k in status.keys],
                    right=["in flight", "requests left", "tokens left"]))
    out.print(table("memory layer", ["shard", "unflushed", "flush lag p99", "quarantined"],
                    [(escape(name), str(s.dirty),
                      "-" if s.flush_lag_p99_s is None else f"{s.flush_lag_p99_s:.3f}s",
                      str(s.quarantine.count)) for name, s in status.shards.items()],
                    right=["unflushed", "flush lag p99", "quarantined"]))
    held = {shard: q for shard, q in status.state_quarantine.items() if q.count}
    if held:
        total = sum(q.count for q in held.values())
        out.print(table(
            f"state records quarantined: {total} (PostgreSQL refused them; they stay in "
            "Redis, unflushed, until the key is written again)", ["shard", "key", "reason"],
            [(escape(shard), escape(key), escape(reason)) for shard, q in held.items()
             for key, reason in q.records.items()]))


def _color(state: str) -> str:
    return f"[{COLORS.get(state, 'white')}]{state}[/]"


def _paused(pause: Pause | None) -> str:
    if pause is None:
        return "no"
    why = f": {escape(pause.reason)}" if pause.reason else ""
    return f"[yellow]paused[/] by {escape(pause.by)} at {pause.at:%Y-%m-%d %H:%M:%S}Z{why}"
