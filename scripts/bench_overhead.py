"""Orchestrator overhead: a 5-step no-I/O workflow through the full stack vs a bare
Celery chain of 5 no-op tasks, same broker, same worker count and pool, one run.

    python scripts/bench_overhead.py --invocations 1000 --rounds 2

Prints both throughputs and their ratio (target: full stack >= 0.90 of bare Celery), and
writes a PNG chart beside the JSON results in --out.

Two more bare sides show where a difference comes from: bare Celery with task events on
(``-E``, as the fleet's workers run for Flower), and bare Celery on the workers' own broker
transport (``workers/transport.py``: kombu's Redis transport with a channel that closes
cleanly and keeps one Redis client instead of building one per ack, unacked write and
event). The target is judged against plain bare Celery; the ratio against the transport
side is printed beside it: the orchestration's own cost, with the transport's gain taken
out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from pathlib import Path

import redis
from benchkit import bench_settings, plain_celery_worker, pyplot
from benchkit import console as wide_console
from benchkit import progress as bench_progress
from celery import Celery, chain
from rich.progress import Progress
from rich.table import Table

import orchestrator
from config import Settings, build_celery_config
from orchestrator import subsystems
from orchestrator.devstack.fleet import local_fleet
from orchestrator.devstack.processes import WorkerProcess

SCRIPTS = Path(__file__).resolve().parent
# Completion is timed where it happens (finished_at in PostgreSQL, a timestamp written by
# the bare chain's last task), so polling only has to notice it: slowly, to stay cheap.
POLL = 0.25
# Issue 13: the full stack, progress guarantee included, at 0.9 of bare Celery or better.
TARGET = 0.90


def run_full(n: int, progress: Progress) -> float:
    """Invocations per second of pipeline-5, submit to last completion."""
    store = subsystems.current().store
    task = progress.add_task("full stack", total=n)
    started = time.time()
    ids = [orchestrator.submit("pipeline-5", {"n": i}) for i in range(n)]
    done = 0
    while done < n:
        done = store.finished_count(ids)
        progress.update(task, completed=done)
        if done < n:
            time.sleep(POLL)
    elapsed = store.last_finished_at(ids) - started
    failed = [i for i, s in store.status_of(ids).items() if s.value != "succeeded"]
    if failed:
        raise SystemExit(f"{len(failed)} full-stack invocations failed")
    return n / elapsed


def run_bare(n: int, settings: Settings, counter: str, progress: Progress, *,
             queue: str = "bare", label: str = "bare Celery") -> float:
    """Chains per second of 5 no-op tasks through bare Celery, on ``queue``."""
    app = Celery("bare-producer", set_as_current=False)
    app.conf.update(build_celery_config(settings))
    client = redis.Redis.from_url(settings.redis_url or "")
    client.delete(counter)
    task = progress.add_task(label, total=n)
    started = time.time()
    for i in range(n):
        sigs = [app.signature("bare.noop", args=(i,), queue=queue)]
        sigs += [app.signature("bare.noop", queue=queue) for _ in range(3)]
        sigs.append(app.signature("bare.last", queue=queue))
        chain(*sigs).apply_async()
    done = 0
    while done < n:
        done = int(client.get(counter) or 0)
        progress.update(task, completed=done)
        if done < n:
            time.sleep(POLL)
    elapsed = float(client.get(counter + ":last") or 0) - started
    app.close()
    return n / elapsed


def chart(full: list[float], bare: list[float], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(["bare Celery chain", "orchestrator pipeline-5"],
           [statistics.median(bare), statistics.median(full)], color=["#888", "#2a7"])
    ax.set_ylabel("workflows per second (median of rounds)")
    ax.set_title(f"5-step overhead: ratio {statistics.median(full) / statistics.median(bare):.2f}")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invocations", type=int, default=1000, help="per round and side")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per side")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork processes")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="results dir")
    args = parser.parse_args()
    if args.invocations <= 0 or args.rounds <= 0 or args.concurrency <= 0:
        parser.error("--invocations, --rounds and --concurrency must be positive")

    console = wide_console()
    settings = bench_settings()
    args.out.mkdir(parents=True, exist_ok=True)
    counter = f"bench:bare:{uuid.uuid4().hex[:8]}"
    with local_fleet(settings, say=lambda m: console.print(f"[green]✓[/] {m}"),
                     start_workers=False, simulators=False) as fleet:
        env = fleet.settings.environment()
        log_dir = fleet.settings.data_dir / "logs"
        full_worker = WorkerProcess(env, "agents", pool="prefork",
                                    concurrency=args.concurrency, log_dir=log_dir,
                                    name="bench-full", loglevel="WARNING")
        bare_env = env | {"PYTHONPATH": str(SCRIPTS), "BENCH_COUNTER": counter}
        bare_worker = plain_celery_worker("bench_bare_app", "bare", bare_env, pool="prefork",
                                          concurrency=args.concurrency, log_dir=log_dir,
                                          name="bench-bare")
        # The fleet's workers send task events (-E: Flower needs them); the issue's
        # baseline does not. This one does, to show how much of the gap they are.
        events_worker = plain_celery_worker("bench_bare_app", "bare-events", bare_env,
                                            pool="prefork", concurrency=args.concurrency,
                                            log_dir=log_dir, name="bench-bare-events",
                                            events=True)
        transport_worker = plain_celery_worker(
            "bench_bare_app", "bare-transport", bare_env | {"BENCH_TRANSPORT": "orchestrator"},
            pool="prefork", concurrency=args.concurrency, log_dir=log_dir,
            name="bench-bare-transport")
        workers = (full_worker, bare_worker, events_worker, transport_worker)
        full_rates: list[float] = []
        bare_rates: list[float] = []
        events_rates: list[float] = []
        transport_rates: list[float] = []
        bare_sides = ((bare_rates, "bare", "bare Celery"),
                      (events_rates, "bare-events", "bare, events"),
                      (transport_rates, "bare-transport", "bare, our transport"))
        try:
            # Every worker stays up for the whole run, so all sides share the same cores.
            for worker in workers:
                worker.start()
            with bench_progress(console, counts=True) as progress:
                run_full(min(50, args.invocations), progress)  # warm-up: imports, pools
                for _, queue, label in bare_sides:
                    run_bare(min(50, args.invocations), fleet.settings, counter, progress,
                             queue=queue, label=label)
                for _ in range(args.rounds):
                    for rates, queue, label in bare_sides[:1]:
                        rates.append(run_bare(args.invocations, fleet.settings, counter,
                                              progress, queue=queue, label=label))
                    full_rates.append(run_full(args.invocations, progress))
                    for rates, queue, label in bare_sides[1:]:
                        rates.append(run_bare(args.invocations, fleet.settings, counter,
                                              progress, queue=queue, label=label))
        finally:
            for worker in workers:
                worker.stop()
    full, bare = statistics.median(full_rates), statistics.median(bare_rates)
    with_events = statistics.median(events_rates)
    with_transport = statistics.median(transport_rates)
    table = Table(title=f"5-step workflow overhead ({args.invocations} x {args.rounds} rounds, "
                        f"prefork x{args.concurrency})")
    for column in ("side", "rounds (workflows/s)", "median workflows/s"):
        table.add_column(column)
    table.add_row("bare Celery chain", ", ".join(f"{r:.1f}" for r in bare_rates), f"{bare:.1f}")
    table.add_row("bare Celery chain, task events (-E)",
                  ", ".join(f"{r:.1f}" for r in events_rates), f"{with_events:.1f}")
    table.add_row("bare Celery chain, this project's transport",
                  ", ".join(f"{r:.1f}" for r in transport_rates), f"{with_transport:.1f}")
    table.add_row("orchestrator", ", ".join(f"{r:.1f}" for r in full_rates), f"{full:.1f}")
    console.print(table)
    ratio = full / bare
    verdict = "reached" if ratio >= TARGET else "NOT reached"
    console.print(f"ratio full/bare = {ratio:.3f} (target >= {TARGET:.2f}: {verdict})")
    console.print(f"ratio full/bare with task events = {full / with_events:.3f} (the fleet's "
                  f"workers send task events for Flower; the target is judged on the line "
                  f"above); with task events bare Celery ran at {with_events / bare:.3f} of its "
                  f"rate without")
    console.print(f"ratio full/bare on this project's transport = {full / with_transport:.3f} "
                  f"(the orchestration's own cost; the transport alone ran bare Celery at "
                  f"{with_transport / bare:.3f} of its stock rate)")
    results = {"full_rates": full_rates, "bare_rates": bare_rates,
               "bare_events_rates": events_rates, "bare_transport_rates": transport_rates,
               "ratio": ratio, "ratio_with_events": full / with_events,
               "ratio_same_transport": full / with_transport,
               "invocations": args.invocations, "concurrency": args.concurrency}
    (args.out / "bench_overhead.json").write_text(json.dumps(results, indent=2))
    chart(full_rates, bare_rates, args.out / "bench_overhead.png")
    console.print(f"results: {args.out / 'bench_overhead.json'}, chart: "
                  f"{args.out / 'bench_overhead.png'}")


if __name__ == "__main__":
    main()
