"""Tool-call timeout cascades: the seed's incident, with breakers on and off, one run.

    python scripts/bench_breaker.py --rate 5 --before 60 --outage 60 --after 20

Steady load of ``order-status`` (one ``lookup_order`` call each) against the tool
simulator with a 2% hang rate (hangs outlast the tool's 1 s timeout); then a full outage
of ``lookup_order`` (every call hangs) for --outage seconds; then recovery. The same
schedule runs twice: breakers off, then on. Prints per run: invocations succeeded (and
the share a fallback served), failed, unfinished, p50/p99 latency before and during the
outage, and worker-seconds spent blocked on the failing tool; writes a chart.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from benchkit import bench_settings, pyplot
from benchkit import console as wide_console
from benchkit import progress as bench_progress
from rich.progress import Progress
from rich.table import Table

import orchestrator
from config import Settings
from orchestrator import subsystems, telemetry
from orchestrator.devstack.fleet import local_fleet
from orchestrator.devstack.processes import WorkerProcess
from orchestrator.devstack.simulators.server import start_server
from orchestrator.devstack.simulators.tool_server import ToolSimConfig, create_app
from orchestrator.invocation import InvocationStatus
from orchestrator.telemetry import percentile


@dataclass
class Run:
    name: str
    submitted: dict[str, str] = field(default_factory=dict)  # id -> phase
    succeeded: int = 0
    fallback: int = 0
    failed: int = 0
    unfinished: int = 0
    latency: dict[str, list[float]] = field(default_factory=dict)
    blocked_seconds: float = 0.0

    def p(self, phase: str, q: float) -> float | None:
        return percentile(self.latency.get(phase, []), q)


def _phase(elapsed: float, args: argparse.Namespace) -> str:
    if elapsed < args.before:
        return "before"
    if elapsed < args.before + args.outage:
        return "outage"
    return "after"


def run(name: str, settings: Settings, args: argparse.Namespace, progress: Progress,
        log_dir: Path) -> Run:
    tools = start_server(create_app(ToolSimConfig(latency=0.05, jitter=0.01,
                                                  hang_rate=args.hang_rate,
                                                  hang_seconds=30.0)))
    configured = settings.model_copy(update={
        "tools_url": tools.url, "breakers_enabled": name == "breakers on",
        "max_queue_depth": 1_000_000})
    orchestrator.configure(configured)
    sub = subsystems.current()
    rt = sub.runtime
    sub.breakers.get("lookup_order").force("closed")  # a clean start for both runs
    blocked_before = telemetry.counters(rt.redis).get("tool_blocked_ms:lookup_order", 0)
    env = configured.environment()
    workers = [
        WorkerProcess(env, "agents", pool="prefork", concurrency=1, log_dir=log_dir,
                      name=f"bench-agents-{name[-3:]}", loglevel="WARNING"),
        *[WorkerProcess(env, "tools", pool="threads", concurrency=args.threads,
                        log_dir=log_dir, name=f"bench-tools-{name[-3:]}-{i}",
                        loglevel="WARNING") for i in range(args.workers)],
    ]
    result = Run(name)
    total = args.before + args.outage + args.after
    task = progress.add_task(name, total=total + args.drain)
    try:
        for worker in workers:
            worker.start()
        start = time.monotonic()
        outage_on = outage_off = False
        sent = 0
        while (elapsed := time.monotonic() - start) < total:
            phase = _phase(elapsed, args)
            if phase == "outage" and not outage_on:
                httpx.post(f"{tools.url}/admin/outage",
                           json={"tool": "lookup_order", "mode": "hang"})
                outage_on = True
            if phase == "after" and not outage_off:
                httpx.post(f"{tools.url}/admin/outage",
                           json={"tool": "lookup_order", "mode": None})
                outage_off = True
            while sent < elapsed * args.rate:
                invocation = orchestrator.submit(
                    "order-status", {"customer_id": f"c-{uuid.uuid4().hex[:8]}"})
                result.submitted[invocation] = phase
                sent += 1
            progress.update(task, completed=elapsed)
            time.sleep(0.02)
        deadline = time.monotonic() + args.drain
        ids = list(result.submitted)
        while time.monotonic() < deadline:
            statuses = sub.store.status_of(ids)
            if all(s.finished for s in statuses.values()):
                break
            progress.update(task, completed=total + args.drain - (deadline - time.monotonic()))
            time.sleep(0.5)
    finally:
        for worker in workers:
            worker.stop(timeout=5)
        tools.stop()
    progress.update(task, completed=total + args.drain)
    for invocation_id, phase in result.submitted.items():
        found = sub.store.get(invocation_id)
        assert found is not None
        if found.status is InvocationStatus.SUCCEEDED:
            result.succeeded += 1
            result.fallback += any(s.fallback for s in found.steps)
            if found.latency is not None:
                result.latency.setdefault(phase, []).append(found.latency)
        elif found.status is InvocationStatus.FAILED:
            result.failed += 1
        else:
            result.unfinished += 1
    blocked = telemetry.counters(rt.redis).get("tool_blocked_ms:lookup_order", 0)
    result.blocked_seconds = (blocked - blocked_before) / 1000
    return result


def _chart(runs: list[Run], path: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = [r.name for r in runs]
    left.bar(names, [r.blocked_seconds for r in runs], color=["#888", "#2a7"])
    left.set_ylabel("worker-seconds blocked on lookup_order")
    width = 0.35
    for i, phase in enumerate(("before", "outage")):
        values = [r.p(phase, 99) or 0 for r in runs]
        right.bar([x + i * width for x in range(len(runs))], values, width, label=phase)
    right.set_xticks([x + width / 2 for x in range(len(runs))], names)
    right.set_ylabel("p99 latency (s)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=5.0, help="invocations per second")
    # 300 invocations before the outage, so its p99 sees the 2% hangs it is meant to.
    parser.add_argument("--before", type=float, default=60.0, help="seconds before outage")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds of outage")
    parser.add_argument("--after", type=float, default=20.0, help="seconds after it")
    parser.add_argument("--drain", type=float, default=120.0, help="max seconds to finish")
    parser.add_argument("--hang-rate", type=float, default=0.02)
    parser.add_argument("--workers", type=int, default=2, help="tools worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per tools worker")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    if min(args.rate, args.before, args.outage, args.after, args.workers, args.threads) <= 0:
        parser.error("rates, durations, workers and threads must be positive")
    if not 0 <= args.hang_rate < 1:
        parser.error("--hang-rate is a share in [0, 1)")
    console = wide_console()
    args.out.mkdir(parents=True, exist_ok=True)
    with local_fleet(bench_settings(), say=lambda m: console.print(f"[green]✓[/] {m}"),
                     start_workers=False, simulators=False) as fleet, \
            bench_progress(console) as progress:
        log_dir = fleet.settings.data_dir / "logs"
        runs = [run(name, fleet.settings, args, progress, log_dir)
                for name in ("breakers off", "breakers on")]
    table = Table(title=f"lookup_order outage: {args.rate}/s, {args.hang_rate:.0%} hangs, "
                        f"{args.outage:.0f}s outage, {args.workers}x{args.threads} tool slots")
    for column in ("run", "submitted", "succeeded (fallback)", "failed", "unfinished",
                   "p50 / p99 before", "p50 / p99 outage", "worker-s blocked"):
        table.add_column(column, justify="right")

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}s"

    for r in runs:
        share = r.fallback / r.succeeded if r.succeeded else 0.0
        table.add_row(r.name, str(len(r.submitted)), f"{r.succeeded} ({share:.0%})",
                      str(r.failed), str(r.unfinished),
                      f"{fmt(r.p('before', 50))} / {fmt(r.p('before', 99))}",
                      f"{fmt(r.p('outage', 50))} / {fmt(r.p('outage', 99))}",
                      f"{r.blocked_seconds:.1f}")
    console.print(table)
    off, on = runs
    ratio = on.blocked_seconds / off.blocked_seconds if off.blocked_seconds else float("inf")
    p99_before, p99_outage = on.p("before", 99), on.p("outage", 99)
    for text, ok in [
        (f"blocked worker-seconds <= 5% of breakers-off ({ratio:.1%})", ratio <= 0.05),
        (f"no failed invocations with breakers ({on.failed} failed, {on.unfinished} "
         "unfinished)", on.failed == 0 and on.unfinished == 0),
        (f"p99 during outage <= 2x p99 before ({fmt(p99_outage)} vs {fmt(p99_before)})",
         p99_before is not None and p99_outage is not None and p99_outage <= 2 * p99_before),
    ]:
        console.print(f"{'reached' if ok else 'NOT reached'}: {text}")
    (args.out / "bench_breaker.json").write_text(json.dumps([
        {"run": r.name, "submitted": len(r.submitted), "succeeded": r.succeeded,
         "fallback": r.fallback, "failed": r.failed, "unfinished": r.unfinished,
         "p50_before": r.p("before", 50), "p99_before": r.p("before", 99),
         "p50_outage": r.p("outage", 50), "p99_outage": r.p("outage", 99),
         "blocked_worker_seconds": r.blocked_seconds} for r in runs], indent=2))
    _chart(runs, args.out / "bench_breaker.png")
    console.print(f"results: {args.out / 'bench_breaker.json'}, "
                  f"chart: {args.out / 'bench_breaker.png'}")


if __name__ == "__main__":
    main()
