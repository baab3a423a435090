"""LLM rate-limit saturation: the orchestrator's fleet-wide limiter against plain Celery,
same provider simulator, same worker processes and threads, one run. Plain Celery runs
twice: with a per-worker ``rate_limit`` summing to the provider's capacity, and without.
Then, in the same run, the orchestrator alone against a simulator that behaves like an
OpenAI-compatible gateway (the "gateway" row): by default fixed one-minute windows on its
own clock (the first boundary ``--phase-offset`` s after the row starts), ``retry-after:
60`` on every 429 and headers of its own naming (``x-ratelimit-<scope>-remaining-*``, no
reset), with RPM binding (``--gateway-rpm``), measured over ``--gateway-seconds`` from a
cold start.

    python scripts/bench_llm.py --seconds 60
    python scripts/bench_llm.py --window fixed --retry-after 60 --header-style gateway

Provider: 2 keys, 20 concurrent calls per key, ~0.5 s latency (RPM set high enough that
concurrency binds), in a process of its own like a real provider (in a thread of this
process its event loop would wait for the GIL behind the producer and count calls late:
``--simulator-in-process`` shows that). Demand: 3x the provider's concurrency kept
outstanding at all times. Prints capacity (sum over keys of min(RPM/60, concurrency / mean
latency)), completions/s, utilization, 429s, provider requests per LLM call, the limiter's
wait p50/p99 and, from the provider's own clock, how full its slots were (slot-seconds held
/ (keys x concurrency x seconds)) and its mean hold per answered call, for both sides, and
writes a chart beside the JSON results.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import redis
from benchkit import bench_settings, plain_celery_worker, pyplot
from benchkit import console as wide_console
from benchkit import progress as bench_progress
from celery import Celery
from pydantic import SecretStr
from rich.progress import Progress
from rich.table import Table

import orchestrator
from config import Settings, build_celery_config
from orchestrator import subsystems
from orchestrator.devstack.fleet import local_fleet
from orchestrator.devstack.processes import WorkerProcess
from orchestrator.devstack.simulators.llm_provider import (
    HEADER_STYLES,
    WINDOWS,
    LLMSimConfig,
    create_app,
    start_in_process,
)
from orchestrator.devstack.simulators.server import ProcessHandle, ServerHandle, start_server
from orchestrator.telemetry import percentile

SCRIPTS = Path(__file__).resolve().parent
KEYS = ("bench-key-1", "bench-key-2")


@dataclass
class Side:
    name: str
    completions_per_s: float = 0.0
    utilization: float = 0.0
    total_429: int = 0
    late_429: int = 0
    requests_per_call: float = 0.0
    wait_p50: float | None = None
    wait_p99: float | None = None
    failed: int = 0
    completed: int = 0
    slots_busy: float = 0.0
    mean_hold: float | None = None


Simulator = ServerHandle | ProcessHandle


def _simulator(config: LLMSimConfig, args: argparse.Namespace) -> Simulator:
    if args.simulator_in_process:
        return start_server(create_app(config))
    return start_in_process(config)


def _stats(handle: Simulator) -> dict[str, Any]:
    """The simulator's totals; ``finished`` counts requests answered (not in flight),
    ``busy_seconds`` the slot-seconds held so far, ``at`` when (monotonic)."""
    data = httpx.get(f"{handle.url}/stats", timeout=10).json()
    totals = dict(data["totals"])
    totals["finished"] = totals["requests"] - sum(k["in_flight"] for k in data["keys"].values())
    totals["busy_seconds"] = data["busy_seconds"]
    totals["at"] = time.monotonic()
    return totals


def _drive(name: str, seconds: float, warmup: float, outstanding: int, handle: Simulator,
           submit: Any, finished: Any, progress: Progress) -> tuple[dict[str, Any], ...]:
    """Keep ``outstanding`` calls in the system; returns simulator stats at 1 s, at the
    start and at the end of the measured window."""
    task = progress.add_task(name, total=warmup + seconds)
    start = time.monotonic()
    pending: set[str] = set()
    at_one = at_start = None
    while True:
        elapsed = time.monotonic() - start
        if at_one is None and elapsed >= 1.0:
            at_one = _stats(handle)
        if at_start is None and elapsed >= warmup:
            at_start = _stats(handle)
        if elapsed >= warmup + seconds:
            break
        pending -= finished(pending)
        for _ in range(outstanding - len(pending)):
            pending.add(submit())
        progress.update(task, completed=elapsed)
        time.sleep(0.05)
    at_end = _stats(handle)
    progress.update(task, completed=warmup + seconds)
    assert at_one is not None and at_start is not None
    return at_one, at_start, at_end


def _summarise(side: Side, capacity: float, seconds: float, stats: tuple[dict[str, Any], ...],
               total_failed: int, slots: int) -> Side:
    at_one, at_start, at_end = stats
    side.completed = at_end["succeeded"] - at_start["succeeded"]
    busy = at_end["busy_seconds"] - at_start["busy_seconds"]
    side.slots_busy = busy / (slots * max(1e-9, at_end["at"] - at_start["at"]))
    side.mean_hold = busy / side.completed if side.completed else None
    side.completions_per_s = side.completed / seconds
    side.utilization = side.completions_per_s / capacity
    side.total_429 = at_end["rate_limited_429"]
    side.late_429 = at_end["rate_limited_429"] - at_one["rate_limited_429"]
    side.requests_per_call = at_end["finished"] / max(1, at_end["succeeded"])
    side.failed = total_failed
    return side


def run_orchestrator(settings: Settings, args: argparse.Namespace, capacity: float,
                     progress: Progress, log_dir: Path, *, gateway: bool = False) -> Side:
    sim = _gateway_config(args) if gateway else _sim_config(args)
    handle = _simulator(sim, args)
    configured = settings.model_copy(update={
        "llm_base_url": f"{handle.url}/v1", "llm_api_keys": [SecretStr(k) for k in KEYS],
        "llm_rpm": sim.rpm, "llm_concurrency": args.concurrency, "llm_tpm": 10_000_000,
        "max_queue_depth": 1_000_000})
    name = (f"orchestrator, gateway ({sim.window} window, retry-after "
            f"{sim.retry_after if sim.retry_after is not None else 'real'}, "
            f"{sim.header_style} headers)" if gateway else "orchestrator")
    seconds, warmup = (args.gateway_seconds, 0.0) if gateway else (args.seconds, args.warmup)
    orchestrator.configure(configured)
    limiter = subsystems.current().llm.limiters["primary"]
    limiter.reset_wait_samples()
    workers = [WorkerProcess(configured.environment(), "llm", pool="threads",
                             concurrency=args.threads, log_dir=log_dir,
                             name=f"bench-llm-{i}", loglevel="WARNING")
               for i in range(args.workers)]
    store = subsystems.current().store
    failed = 0

    def submit() -> str:
        return orchestrator.submit("llm-ask", {"question": f"q {uuid.uuid4().hex}"})

    def finished(pending: set[str]) -> set[str]:
        nonlocal failed
        statuses = store.status_of(list(pending))
        done = {i for i, s in statuses.items() if s.finished}
        failed += sum(1 for i in done if statuses[i].value == "failed")
        return done

    try:
        for worker in workers:
            worker.start()
        if gateway and sim.window == "fixed":
            # A cold gateway whose minute ends a moment after our first call: the case
            # where our limiter's window and the gateway's are furthest apart.
            phase = (time.time() + args.phase_offset) % 60
            httpx.post(f"{handle.url}/admin/config", json={"window_phase": phase},
                       timeout=10).raise_for_status()
        stats = _drive(name, seconds, warmup, args.outstanding, handle,
                       submit, finished, progress)
    finally:
        for worker in workers:
            worker.stop(timeout=5)
        handle.stop()
    side = _summarise(Side(name), capacity, seconds, stats, failed,
                      args.concurrency * len(KEYS))
    waits = limiter.wait_samples()
    side.wait_p50, side.wait_p99 = percentile(waits, 50), percentile(waits, 99)
    return side


def run_plain(settings: Settings, args: argparse.Namespace, capacity: float,
              progress: Progress, log_dir: Path, *, rate_limited: bool) -> Side:
    handle = _simulator(_sim_config(args), args)
    prefix = f"bench:plain:{uuid.uuid4().hex[:6]}"
    configured = settings.model_copy(update={
        "llm_base_url": f"{handle.url}/v1", "llm_api_keys": [SecretStr(k) for k in KEYS]})
    per_worker = max(1, round(capacity / args.workers))
    env = configured.environment() | {
        "PYTHONPATH": str(SCRIPTS), "BENCH_PREFIX": prefix,
        "BENCH_RATE_LIMIT": f"{per_worker}/s" if rate_limited else ""}
    label = "plain Celery, rate_limit" if rate_limited else "plain Celery, no rate_limit"
    workers = []
    for i in range(args.workers):
        workers.append(plain_celery_worker("bench_plain_llm_app", "plain-llm", env,
                                           pool="threads", concurrency=args.threads,
                                           log_dir=log_dir, name=f"bench-plain-{i}"))
    app = Celery("plain-producer", set_as_current=False)
    app.conf.update(build_celery_config(configured))
    client = redis.Redis.from_url(configured.redis_url or "")
    sent = 0

    def submit() -> str:
        nonlocal sent
        sent += 1
        app.send_task("plain.ask", args=(f"q {sent}", time.time()), queue="plain-llm")
        return str(sent)

    def finished(pending: set[str]) -> set[str]:
        counts = {k.decode(): int(v) for k, v in client.hgetall(prefix).items()}
        done_count = sum(counts.values())
        # Calls finish in any order; only how many are still out matters for the demand.
        still_out = max(0, sent - done_count)
        return set(sorted(pending, key=int)[: max(0, len(pending) - still_out)])

    try:
        for worker in workers:
            worker.start()
        stats = _drive(label, args.seconds, args.warmup, args.outstanding, handle,
                       submit, finished, progress)
    finally:
        for worker in workers:
            worker.stop(timeout=5)
        handle.stop()
        app.close()
    counts = {k.decode(): int(v) for k, v in client.hgetall(prefix).items()}
    failed = sum(v for k, v in counts.items() if k.startswith("failed"))
    return _summarise(Side(label), capacity, args.seconds, stats, failed,
                      args.concurrency * len(KEYS))


def _sim_config(args: argparse.Namespace) -> LLMSimConfig:
    return LLMSimConfig(keys=KEYS, rpm=args.rpm, tpm=10_000_000, concurrency=args.concurrency,
                        latency=args.latency, jitter=args.latency / 10, completion_tokens=40)


def _gateway_config(args: argparse.Namespace) -> LLMSimConfig:
    return replace(_sim_config(args), rpm=args.gateway_rpm, window=args.window,
                   retry_after=args.retry_after, header_style=args.header_style)


def _capacity(rpm: int, args: argparse.Namespace) -> float:
    """Calls/s the provider can take: per key, the lower of its RPM and its concurrency
    over the mean latency."""
    return sum(min(rpm / 60, args.concurrency / args.latency) for _ in KEYS)


def _chart(sides: list[Side], path: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = [s.name.replace(", ", "\n") for s in sides]
    colors = ["#2a7", "#888", "#bbb", "#27a"][: len(sides)]
    left.bar(names, [s.utilization for s in sides], color=colors)
    left.axhline(0.97, color="#c33", linestyle="--", label="target 0.97")
    left.axhline(0.90, color="#c93", linestyle=":", label="gateway target 0.90")
    left.set_ylabel("utilization of provider capacity")
    left.legend()
    right.bar(names, [s.total_429 for s in sides], color=colors)
    right.set_ylabel("429 responses")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=3, help="llm worker processes")
    parser.add_argument("--threads", type=int, default=16, help="threads per worker")
    parser.add_argument("--concurrency", type=int, default=20, help="per key")
    parser.add_argument("--rpm", type=int, default=3000, help="per key")
    parser.add_argument("--latency", type=float, default=0.5, help="mean seconds")
    parser.add_argument("--demand", type=float, default=3.0, help="x provider concurrency")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--simulator-in-process", action="store_true",
                        help="serve the simulator from a thread of this process (it then "
                             "shares the producer's GIL)")
    gateway = parser.add_argument_group("the gateway row")
    gateway.add_argument("--window", choices=WINDOWS, default="fixed")
    gateway.add_argument("--retry-after", type=float, default=60.0,
                         help="every 429 says this (0: the real wait)")
    gateway.add_argument("--header-style", choices=HEADER_STYLES, default="gateway")
    gateway.add_argument("--gateway-rpm", type=int, default=1500,
                         help="per key: low enough that RPM, not concurrency, binds")
    gateway.add_argument("--gateway-seconds", type=float, default=180.0,
                         help="measured from a cold start (whole provider minutes)")
    gateway.add_argument("--phase-offset", type=float, default=0.5,
                         help="seconds from the row's start to the gateway's first boundary")
    gateway.add_argument("--no-gateway", action="store_true", help="skip the gateway row")
    gateway.add_argument("--no-plain", action="store_true", help="skip the plain Celery rows")
    args = parser.parse_args()
    if args.retry_after == 0:
        args.retry_after = None
    if min(args.seconds, args.workers, args.threads, args.concurrency, args.rpm,
           args.latency, args.demand) <= 0:
        parser.error("every figure must be positive")
    args.outstanding = int(args.demand * args.concurrency * len(KEYS))
    capacity = _capacity(args.rpm, args)
    gateway_capacity = _capacity(args.gateway_rpm, args)
    console = wide_console()
    console.width = 200  # the table's twelve columns, unabridged
    args.out.mkdir(parents=True, exist_ok=True)
    with local_fleet(bench_settings(), say=lambda m: console.print(f"[green]✓[/] {m}"),
                     start_workers=False, simulators=False) as fleet, \
            bench_progress(console) as progress:
        log_dir = fleet.settings.data_dir / "logs"
        ours = run_orchestrator(fleet.settings, args, capacity, progress, log_dir)
        plain = [] if args.no_plain else [
            run_plain(fleet.settings, args, capacity, progress, log_dir, rate_limited=limited)
            for limited in (True, False)]
        behind = [] if args.no_gateway else [
            run_orchestrator(fleet.settings, args, gateway_capacity, progress, log_dir,
                             gateway=True)]
    table = Table(title=f"LLM saturation: {args.workers} workers x {args.threads} threads, "
                        f"{len(KEYS)} keys x {args.concurrency} concurrent, ~{args.latency}s, "
                        f"{args.outstanding} calls outstanding, {args.seconds:.0f}s measured "
                        f"(gateway row: RPM {args.gateway_rpm}/key, {args.gateway_seconds:.0f}s "
                        "from a cold start)")
    for column in ("side", "capacity/s", "completions/s", "utilization", "429s",
                   "429s after 1st s", "requests/call", "limiter wait p50", "p99",
                   "failed calls", "slots busy", "hold/call"):
        table.add_column(column, justify="right")
    for side in (ours, *plain, *behind):
        cap = gateway_capacity if any(side is b for b in behind) else capacity
        table.add_row(side.name, f"{cap:.1f}", f"{side.completions_per_s:.1f}",
                      f"{side.utilization:.3f}", str(side.total_429), str(side.late_429),
                      f"{side.requests_per_call:.3f}",
                      "n/a" if side.wait_p50 is None else f"{side.wait_p50:.3f}s",
                      "n/a" if side.wait_p99 is None else f"{side.wait_p99:.3f}s",
                      str(side.failed), f"{side.slots_busy:.3f}",
                      "n/a" if side.mean_hold is None else f"{side.mean_hold:.3f}s")
    console.print(table)
    checks = [
        (f"utilization >= 0.97 ({ours.utilization:.3f})", ours.utilization >= 0.97),
        (f"zero 429s after the first second ({ours.late_429})", ours.late_429 == 0),
        (f"requests per call <= 1.01 ({ours.requests_per_call:.3f})",
         ours.requests_per_call <= 1.01),
        (f"no failed call ({ours.failed})", ours.failed == 0),
    ]
    for side in behind:
        checks += [(f"gateway: utilization >= 0.90 ({side.utilization:.3f})",
                    side.utilization >= 0.90),
                   (f"gateway: no failed call ({side.failed})", side.failed == 0)]
    for name, ok in checks:
        console.print(f"{'reached' if ok else 'NOT reached'}: {name}")
    (args.out / "bench_llm.json").write_text(json.dumps(
        {"capacity_per_s": capacity, "gateway_capacity_per_s": gateway_capacity,
         "sides": [vars(s) for s in (ours, *plain, *behind)]}, indent=2))
    _chart([ours, *plain, *behind], args.out / "bench_llm.png")
    console.print(f"results: {args.out / 'bench_llm.json'}, chart: {args.out / 'bench_llm.png'}")


if __name__ == "__main__":
    main()
