"""Cost as work grows: throughput, p99 latency, Redis memory, PostgreSQL size and metrics
scrape time of pipeline-5 (five no-I/O python steps) at 1k, 10k and 100k invocations.

    python scripts/bench_scale.py                                  # every size run for real
    python scripts/bench_scale.py --sizes 1000,10000,100000 --seed-above 10000   # faster

Each size runs in a database of its own (created on the server of ORCH_DATABASE_URL, or
of an embedded PostgreSQL, migrated, dropped at the end unless --keep-database) through
an agents worker of its own (prefork, --concurrency; 50 warm-up invocations, deleted
before the size starts). A size is either

- **real**: that many invocations submitted (in batches, waiting out ``Backpressure``)
  and run to the end; or, above ``--seed-above``,
- **seeded**: size - --batch finished pipeline-5 invocations (five step rows each,
  finished over the last 29 days, none in the exporter's 5-minute window) inserted in
  bulk as history, then --batch real invocations submitted and run like a real size.
  Throughput, latency and Redis memory are then those of the --batch real ones; table
  sizes and scrape time are those of the whole history.

Before the sizes, one of --batch real invocations runs the same way and is not reported
(``--no-warm-up`` skips it): on freshly started services the first size came out ~15%
slower than the same size run later.

Per size: throughput (real invocations per second, first submit to last ``finished_at``),
p50/p99 latency (``finished_at - created_at`` in PostgreSQL), Redis ``used_memory`` per
invocation in flight (sampled every 0.5 s during the run, at the sample with the most in
flight: (used - before - finished so far x left per finished) / in flight) and left per
finished invocation once all ended (their in-flight hashes, which expire after a day),
Redis keys without an expiry the run added (0 expected), ``pg_total_relation_size`` and
``pg_indexes_size`` of ``invocations`` and the size of ``invocation_steps`` (after VACUUM
ANALYZE, as autovacuum leaves a table in steady state), and the metrics scrape time: the
median of --scrapes builds of the Prometheus exposition (what ``orchestrator metrics``
serves): right after the size with the served 5-minute window, and at the end, the sizes
taking turns (a busy machine slows them alike), with a window holding each size's last
--batch finished invocations, the same number at every size: the history axis.

Targets: throughput and scrape time (the last-batch window) within 20% of the 1k row of
the same run. Redis memory is the whole server's: give it a Redis of its own (ORCH_REDIS_URL
unset starts an embedded one). JSON and a PNG chart go to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import uuid
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from benchkit import bench_settings, pyplot
from benchkit import console as wide_console
from benchkit import progress as bench_progress
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import Engine, text

import orchestrator
from config import Settings
from orchestrator import runtime, subsystems
from orchestrator.constants import INFLIGHT
from orchestrator.devstack.processes import WorkerProcess
from orchestrator.devstack.servers.stack import started_services
from orchestrator.errors import Backpressure
from orchestrator.metrics import FleetCollector, registry
from orchestrator.store.migrate import upgrade
from orchestrator.subsystems import Subsystems

WORKFLOW = "pipeline-5"
SAMPLE_EVERY = 0.5  # seconds between Redis memory samples
POLL = 0.25  # seconds between completion checks
SEED_CHUNK = 20_000  # seeded invocations per INSERT statement
TARGET = 0.20  # throughput and scrape time within 20% of the first (1k) row

# Seeded history: finished pipeline-5 invocations as the runner writes them (payload,
# output, five step rows, an id made at its creation time as ``orchestrator.ids`` makes
# it: a version 7 UUID, its millisecond ``h`` then random hex ``r``), finished between
# 10 minutes and 29 days ago.
_SEED = text("""
    WITH made AS (
        INSERT INTO invocations (id, workflow, payload, status, step_count, output,
                                 created_at, started_at, finished_at)
        SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7' || substr(r, 1, 3)
                   || '-' || substr('89ab', 1 + (get_byte(decode(r, 'hex'), 15) % 4), 1)
                   || substr(r, 4, 3) || '-' || substr(r, 7, 12),
               :wf, jsonb_build_object('n', g), 'succeeded', 5,
               jsonb_build_object('n', g + 5), t, t, t + interval '50 ms'
          FROM (SELECT g, t,
                       lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0') AS h,
                       md5(random()::text || g) AS r
                  FROM (SELECT g, now() - interval '10 minutes'
                               - interval '29 days' * (g / CAST(:total AS float8)) AS t
                          FROM generate_series(CAST(:lo AS int), CAST(:hi AS int)) g) a) s
        RETURNING id, created_at, payload)
    INSERT INTO invocation_steps (invocation_id, idx, name, kind, status, attempts, output,
                                  fallback, prompt_tokens, completion_tokens, started_at,
                                  finished_at)
    SELECT made.id, k, 'step-' || (k + 1), 'python', 'done', 1,
           jsonb_build_object('n', (made.payload->>'n')::int + k + 1), false, 0, 0,
           made.created_at + k * interval '10 ms', made.created_at + k * interval '10 ms'
      FROM made, generate_series(0, 4) k""")


@dataclass
class Sample:
    at: float
    used_memory: int
    in_flight: int
    submitted: int


@dataclass
class SizeResult:
    size: int
    mode: str  # "real" or "seeded"
    real: int
    seeded: int
    throughput: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    run_p99: float = 0.0  # first step's start to the end: without the queue wait
    backpressure_waits: int = 0
    peak_in_flight: int = 0
    redis_per_in_flight: float = 0.0
    redis_per_finished: float = 0.0
    keys_without_ttl_added: int = 0
    inflight_hashes_left: int = 0
    rows: int = 0
    table_bytes: int = 0
    index_bytes: int = 0
    steps_bytes: int = 0
    scrape_fixed_ms: float = 0.0
    fixed_window_s: float = 0.0
    scrape_served_ms: float = 0.0
    served_window_rows: int = 0
    failed: int = 0
    samples: list[Sample] = field(default_factory=list)


# -- the bench's own database ----------------------------------------------------------

def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def create_database(server_url: str, name: str) -> str:
    """A new empty database ``name`` on the server of ``server_url``; returns its URL."""
    with psycopg.connect(_plain(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name


def drop_database(server_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(_plain(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def vacuum(url: str) -> None:
    with psycopg.connect(_plain(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE invocations")
        conn.execute("VACUUM ANALYZE invocation_steps")


# -- Redis -----------------------------------------------------------------------------

def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def persistent_keys(client: redis.Redis) -> set[bytes]:
    """Keys of the bench's Redis db without an expiry."""
    found: set[bytes] = set()
    batch: list[bytes] = []
    for key in client.scan_iter(count=5000):
        batch.append(key)
        if len(batch) == 5000:
            found |= _no_ttl(client, batch)
            batch = []
    return found | _no_ttl(client, batch)


def _no_ttl(client: redis.Redis, keys: list[bytes]) -> set[bytes]:
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.ttl(key)
        return {k for k, ttl in zip(keys, pipe.execute(), strict=True) if ttl == -1}


def inflight_hashes(client: redis.Redis, *, delete: bool = False) -> int:
    """How many in-flight hashes the db holds (deleting them with ``delete``)."""
    pattern = INFLIGHT.format(invocation_id="*")
    found = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=5000):
        found += 1
        batch.append(key)
        if delete and len(batch) == 5000:
            client.unlink(*batch)
            batch = []
    if delete and batch:
        client.unlink(*batch)
    return found


def other_dbs_keys(client: redis.Redis, own_db: int) -> int:
    """Keys in the server's other dbs (their changes land in ``used_memory`` too)."""
    return sum(int(v["keys"]) for k, v in client.info("keyspace").items()
               if k != f"db{own_db}")


# -- one size --------------------------------------------------------------------------

class Sampler(threading.Thread):
    """Redis ``used_memory`` and invocations in flight, every ``SAMPLE_EVERY`` seconds."""

    def __init__(self, client: redis.Redis, engine: Engine) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.engine = engine
        self.submitted = 0
        self.samples: list[Sample] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_EVERY):
            submitted = self.submitted
            self.samples.append(Sample(time.time(), used_memory(self.client),
                                       unfinished(self.engine), submitted))


def unfinished(engine: Engine) -> int:
    """Queued or running invocations (the partial index of migration 0005)."""
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM invocations WHERE status IN ('queued', 'running')"
        )).scalar_one())


def seed(engine: Engine, count: int, progress: Progress) -> None:
    task = progress.add_task(f"seeding {count:,} finished invocations", total=count)
    with engine.begin() as conn:
        for lo in range(1, count + 1, SEED_CHUNK):
            hi = min(count, lo + SEED_CHUNK - 1)
            conn.execute(_SEED, {"wf": WORKFLOW, "lo": lo, "hi": hi, "total": count})
            progress.update(task, completed=hi)


def submit_all(count: int, batch: int, sampler: Sampler, progress: Progress,
               result: SizeResult) -> float:
    """Submit ``count`` invocations, ``batch`` between progress checks, waiting out
    backpressure; returns when the first was submitted (Unix time)."""
    task = progress.add_task("submitted", total=count)
    started = time.time()
    i = 0
    while i < count:
        for _ in range(min(batch, count - i)):
            try:
                orchestrator.submit(WORKFLOW, {"n": i})
            except Backpressure as exc:
                result.backpressure_waits += 1
                time.sleep(min(exc.retry_after, 2.0))
                break
            i += 1
            sampler.submitted = i
        progress.update(task, completed=i)
    return started


def scrape_ms(collector: CollectorRegistry, times: int) -> list[float]:
    """Milliseconds each of ``times`` builds of the exposition took."""
    taken = []
    for _ in range(times):
        began = time.perf_counter()
        generate_latest(collector)
        taken.append((time.perf_counter() - began) * 1000)
    return taken


def run_size(size: int, *, seeded: int, args: argparse.Namespace, url: str,
             client: redis.Redis, console: Console) -> SizeResult:
    """One size in the database at ``url`` (this process's runtime points at it and the
    agents worker runs): everything but the history-axis scrape (:func:`scrape_rounds`)."""
    sub = subsystems.current()
    engine = sub.runtime.engine
    real = size - seeded
    result = SizeResult(size, "seeded" if seeded else "real", real, seeded)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE invocations CASCADE"))  # the warm-up's
    # The in-flight hashes of earlier runs (they would expire after a day) go, so every
    # size starts from the same Redis.
    inflight_hashes(client, delete=True)
    with bench_progress(console, counts=True) as progress:
        if seeded:
            seed(engine, seeded, progress)
        vacuum(url)
        time.sleep(1.0)
        baseline = used_memory(client)
        persistent_before = persistent_keys(client)
        with engine.connect() as conn:
            t0 = conn.execute(text("SELECT now()")).scalar_one()
        sampler = Sampler(client, engine)
        sampler.start()
        try:
            started = submit_all(real, args.submit_batch, sampler, progress, result)
            task = progress.add_task("finished", total=real)
            while (left := unfinished(engine)) > 0:
                progress.update(task, completed=real - left)
                time.sleep(POLL)
            progress.update(task, completed=real)
        finally:
            sampler.stop.set()
            sampler.join()
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT EXTRACT(EPOCH FROM max(finished_at)),"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY"
            "  EXTRACT(EPOCH FROM finished_at - created_at)),"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY"
            "  EXTRACT(EPOCH FROM finished_at - created_at)),"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY"
            "  EXTRACT(EPOCH FROM finished_at - started_at)),"
            " count(*) FILTER (WHERE status <> 'succeeded'), count(*)"
            " FROM invocations WHERE created_at >= :t0"), {"t0": t0}).one()
    last, p50, p99, run_p99, failed, counted = row
    if int(counted) != real:
        raise SystemExit(f"size {size}: {counted} real invocations found, {real} submitted")
    result.throughput = real / (float(last) - started)
    result.p50, result.p99, result.failed = float(p50), float(p99), int(failed)
    result.run_p99 = float(run_p99)

    time.sleep(1.0)
    after = used_memory(client)
    result.redis_per_finished = (after - baseline) / real
    result.inflight_hashes_left = inflight_hashes(client)
    result.keys_without_ttl_added = len(persistent_keys(client) - persistent_before)
    result.samples = sampler.samples
    peak = max(sampler.samples, key=lambda s: s.in_flight, default=None)
    if peak is not None and peak.in_flight > 0:
        finished_then = max(0, peak.submitted - peak.in_flight)
        result.peak_in_flight = peak.in_flight
        result.redis_per_in_flight = (peak.used_memory - baseline
                                      - finished_then * result.redis_per_finished
                                      ) / peak.in_flight

    vacuum(url)
    with engine.connect() as conn:
        sizes = conn.execute(text(
            "SELECT (SELECT count(*) FROM invocations),"
            " pg_total_relation_size('invocations'), pg_indexes_size('invocations'),"
            " pg_total_relation_size('invocation_steps')")).one()
        result.served_window_rows = int(conn.execute(text(
            "SELECT count(*) FROM invocations"
            " WHERE finished_at > now() - interval '300 seconds'")).scalar_one())
    result.rows, result.table_bytes, result.index_bytes, result.steps_bytes = map(int, sizes)
    served = registry(sub)
    scrape_ms(served, 1)
    result.scrape_served_ms = statistics.median(scrape_ms(served, args.scrapes))
    return result


def scrape_rounds(results: list[SizeResult], settings: list[Settings], *, batch: int,
                  rounds: int, progress: Progress) -> None:
    """The history axis: each size's exposition built with a window holding its last
    ``batch`` finished invocations (the window is set afresh before each build), the
    sizes taking turns for ``rounds`` rounds (a busy machine slows them alike); sets each
    result's median."""
    subs = [Subsystems(runtime.Runtime(configured)) for configured in settings]

    def window(sub: Subsystems) -> float:
        with sub.runtime.engine.connect() as conn:
            age = conn.execute(text(
                "SELECT EXTRACT(EPOCH FROM now() - finished_at) FROM invocations"
                " WHERE finished_at IS NOT NULL ORDER BY finished_at DESC"
                " OFFSET :k LIMIT 1"), {"k": batch - 1}).scalar_one()
        return float(age) + 0.1

    def collector(sub: Subsystems, seconds: float) -> CollectorRegistry:
        found = CollectorRegistry(auto_describe=False)
        found.register(FleetCollector(sub, window_seconds=seconds))
        return found

    for sub in subs:
        scrape_ms(collector(sub, window(sub)), 1)  # warm: connections, statements
    taken: list[list[float]] = [[] for _ in results]
    task = progress.add_task("scrapes, sizes taking turns", total=rounds)
    for k in range(rounds):
        for i, sub in enumerate(subs):
            seconds = window(sub)
            results[i].fixed_window_s = seconds
            taken[i] += scrape_ms(collector(sub, seconds), 1)
        progress.update(task, completed=k + 1)
    for result, times in zip(results, taken, strict=True):
        result.scrape_fixed_ms = statistics.median(times)
    for sub in subs:
        sub.runtime.close()


# -- report ----------------------------------------------------------------------------

def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base else "n/a"


def report(results: list[SizeResult], console: Console, machine: str) -> None:
    base = results[0]
    runs = Table(title=f"Cost as work grows: {WORKFLOW}, one agents worker ({machine}): runs")
    for column in ("size", "row", "real", "inv/s", "ratio", "p50 s", "p99 s", "run p99 s",
                   "B/in-flight", "peak in flight", "B/finished", "no-TTL keys"):
        runs.add_column(column, justify="left" if column == "row" else "right")
    for r in results:
        runs.add_row(
            f"{r.size:,}", r.mode, f"{r.real:,}", f"{r.throughput:.1f}",
            _ratio(r.throughput, base.throughput), f"{r.p50:.2f}", f"{r.p99:.2f}",
            f"{r.run_p99:.2f}", f"{r.redis_per_in_flight:,.0f}", f"{r.peak_in_flight:,}",
            f"{r.redis_per_finished:,.0f}", str(r.keys_without_ttl_added))
    console.print(runs)
    stores = Table(title="PostgreSQL size and metrics scrape")
    for column in ("size", "rows", "table MB", "index MB", "steps MB", "scrape ms", "ratio",
                   "served ms", "rows in 5 min"):
        stores.add_column(column, justify="right")
    for r in results:
        stores.add_row(
            f"{r.size:,}", f"{r.rows:,}", _mb(r.table_bytes), _mb(r.index_bytes),
            _mb(r.steps_bytes), f"{r.scrape_fixed_ms:.1f}",
            _ratio(r.scrape_fixed_ms, base.scrape_fixed_ms), f"{r.scrape_served_ms:.1f}",
            f"{r.served_window_rows:,}")
    console.print(stores)
    for r in results:
        if r.mode == "seeded":
            console.print(f"{r.size:,} (seeded): {r.seeded:,} finished invocations inserted "
                          f"in bulk as history, then {r.real:,} real ones run; inv/s, "
                          "latency and Redis columns are the real ones', sizes and scrape "
                          "the whole history's.")
        if r.failed:
            console.print(f"[red]{r.size:,}: {r.failed} invocations did not succeed[/]")
    console.print(
        "ratio: to the first row. p50/p99: submit to end, the wait behind the size's "
        "own backlog included (all of it is submitted at once); run p99: first step's "
        "start to the end (each next step queues behind that backlog too). B/in-flight: "
        "Redis bytes per invocation in flight at the sample with the most (peak in "
        "flight); B/finished: Redis bytes left per "
        "finished invocation (in-flight hashes, expiring after a day). no-TTL keys: "
        "Redis keys without expiry the size added. rows: invocations the table holds; "
        "MB: after VACUUM ANALYZE. scrape ms: "
        f"median exposition build, the sizes taking turns, window holding each size's "
        f"last {base.real:,} finished invocations; served ms: right after the size, "
        "5-minute window as served (rows in 5 min: invocations finished in it).")
    for r in results[1:]:
        for name, value, reference in (("throughput", r.throughput, base.throughput),
                                       ("scrape time", r.scrape_fixed_ms,
                                        base.scrape_fixed_ms)):
            change = value / reference - 1
            verdict = "reached" if abs(change) <= TARGET else "NOT reached"
            console.print(f"{r.size:,} vs {base.size:,}: {name} {change:+.0%} "
                          f"(target within {TARGET:.0%}: {verdict})")


def chart(results: list[SizeResult], path: Path) -> None:
    plt = pyplot()
    labels = [f"{r.size:,}\n({r.mode})" for r in results]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    panels: list[tuple[Any, str, list[tuple[str, list[float]]]]] = [
        (axes[0][0], "invocations/s", [("throughput", [r.throughput for r in results])]),
        (axes[0][1], "seconds", [("p50", [r.p50 for r in results]),
                                 ("p99", [r.p99 for r in results]),
                                 ("run p99", [r.run_p99 for r in results])]),
        (axes[0][2], "Redis bytes per invocation",
         [("in flight", [r.redis_per_in_flight for r in results]),
          ("finished, left", [r.redis_per_finished for r in results])]),
        (axes[1][0], "MB", [("invocations table", [r.table_bytes / 1e6 for r in results]),
                            ("its indexes", [r.index_bytes / 1e6 for r in results]),
                            ("steps table", [r.steps_bytes / 1e6 for r in results])]),
        (axes[1][1], "scrape ms", [("last-batch window", [r.scrape_fixed_ms for r in results]),
                                   ("5-min window", [r.scrape_served_ms for r in results])]),
    ]
    for ax, unit, series in panels:
        width = 0.8 / len(series)
        for k, (name, values) in enumerate(series):
            ax.bar([i + k * width for i in range(len(results))], values, width, label=name)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(results))], labels)
        ax.set_ylabel(unit)
        if len(series) > 1:
            ax.legend(fontsize=8)
    axes[0][0].set_title("throughput")
    axes[0][1].set_title("latency")
    axes[0][2].set_title("Redis memory")
    axes[1][0].set_title("PostgreSQL size")
    axes[1][1].set_title("metrics scrape")
    axes[1][2].axis("off")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000",
                        help="comma-separated sizes, the first is the baseline")
    parser.add_argument("--seed-above", type=int, default=0,
                        help="sizes above this are seeded history + --batch real (0: none)")
    parser.add_argument("--batch", type=int, default=1000,
                        help="real invocations of a seeded size; the scrape window's size")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork processes")
    parser.add_argument("--submit-batch", type=int, default=500,
                        help="submits between progress checks")
    parser.add_argument("--scrapes", type=int, default=31, help="scrapes per median")
    parser.add_argument("--machine", default="this machine", help="named in the title")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="skip the unreported --batch-sized warm-up size run first")
    parser.add_argument("--keep-database", action="store_true",
                        help="leave the bench database in place")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="results dir")
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error("--sizes takes integers separated by commas")
    if not sizes or min(sizes) <= 0 or args.batch <= 0 or args.concurrency <= 0:
        parser.error("sizes, --batch and --concurrency must be positive")
    if args.batch > min(sizes):
        parser.error("--batch must not exceed any size (it is the scrape window's size)")

    console = wide_console()
    args.out.mkdir(parents=True, exist_ok=True)

    def say(message: str) -> None:
        console.print(f"[green]✓[/] {message}")

    results: list[SizeResult] = []
    with started_services(bench_settings()) as services:
        server = services.settings.database_url
        assert server
        run = uuid.uuid4().hex[:6]
        urls: list[str] = []
        configured: list[Settings] = []
        try:
            # Not local_fleet: it would migrate the server's database; each size gets one.
            with closing(redis.Redis.from_url(services.settings.redis_url or "")) as client:
                own_db = int(client.connection_pool.connection_kwargs.get("db", 0))
                if others := other_dbs_keys(client, own_db):
                    console.print(f"[yellow]![/] the Redis server holds {others:,} keys in "
                                  "other dbs: their changes are in used_memory too")
                # The first size run after the services start used to come out ~15%
                # slower than the same 1,000 real invocations run later (62.6 and 66.9/s
                # first, 73.2-80.8/s after; 73.2 when run after 100k): a fresh cluster's
                # first minute. A warm-up size, not reported, takes that minute.
                for n, size in enumerate([args.batch, *sizes] if args.warm_up else sizes):
                    warm_up = args.warm_up and n == 0
                    seeded = (size - args.batch
                              if args.seed_above and size > args.seed_above else 0)
                    console.rule(f"{size:,} ({'seeded' if seeded else 'real'})"
                                 + (": warm-up, not reported" if warm_up else ""))
                    name = "warmup" if warm_up else str(size)
                    url = create_database(server, f"bench_scale_{run}_{name}")
                    urls.append(url)
                    upgrade(url)
                    settings = services.settings.model_copy(update={"database_url": url})
                    if not warm_up:
                        configured.append(settings)
                    orchestrator.configure(settings)
                    subsystems.current().load_workflows()
                    say(f"database {url.rsplit('/', 1)[1]}")
                    worker = WorkerProcess(settings.environment(), "agents",
                                           pool="prefork", concurrency=args.concurrency,
                                           log_dir=settings.data_dir / "logs",
                                           name=f"bench-scale-{size}", loglevel="WARNING")
                    try:
                        worker.start()
                        warm = [orchestrator.submit(WORKFLOW, {"n": i}) for i in range(50)]
                        for invocation_id in warm:
                            orchestrator.wait(invocation_id, timeout=120)
                        result = run_size(size, seeded=seeded, args=args, url=url,
                                          client=client, console=console)
                        if not warm_up:
                            results.append(result)
                    finally:
                        worker.stop()
                console.rule("scrape time, history axis")
                with bench_progress(console) as progress:
                    scrape_rounds(results, configured, batch=args.batch,
                                  rounds=args.scrapes, progress=progress)
        finally:
            runtime.current().close()
            if not args.keep_database:
                for url in urls:
                    drop_database(server, url)
    report(results, console, args.machine)
    data = {"workflow": WORKFLOW, "concurrency": args.concurrency, "batch": args.batch,
            "seed_above": args.seed_above, "machine": args.machine,
            "sizes": [asdict(r) for r in results]}
    (args.out / "bench_scale.json").write_text(json.dumps(data, indent=1))
    chart(results, args.out / "bench_scale.png")
    console.print(f"results: {args.out / 'bench_scale.json'}, chart: "
                  f"{args.out / 'bench_scale.png'}")


if __name__ == "__main__":
    main()
