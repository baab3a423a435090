"""Where a step delivery's time goes: a real Celery worker (solo pool, this process) runs
``--invocations`` five-step workflows from its queue, under a profiler, after a warm-up.

    python scripts/profile_steps.py --side full --invocations 300 --profiler pyinstrument
    python scripts/profile_steps.py --side bare --invocations 300 --profiler pyinstrument

``full`` is ``pipeline-5`` through the whole stack (claims, heartbeat, records, the final
PostgreSQL write); ``bare`` is the plain Celery chain of five no-op tasks of
``bench_overhead.py``. Every message is queued before the worker starts, so the worker is
never idle: wall and CPU time per step are the worker's own cost plus its round trips.
Under ``valgrind --tool=callgrind`` use ``--profiler none`` and two sizes; the difference
of the instruction counts over the difference of the sizes is the cost of one invocation.

Redis: ``ORCH_REDIS_URL``, else ``ORCH_TEST_REDIS_URL``, else db 6 of the local Redis (its
queues ``agents`` and ``bare`` are purged before and after). PostgreSQL: a database of
its own, created on ``ORCH_TEST_ADMIN_DATABASE_URL`` (the local server) and dropped after.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
for _path in (str(REPO), str(SCRIPTS)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

STEPS = 5
DEFAULT_REDIS = "redis://127.0.0.1:6379/6"
DEFAULT_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


class Window:
    """Counts finished tasks; profiles from the first task after the warm-up to the last."""

    def __init__(self, warmup_tasks: int, last_task: int, profiler: str) -> None:
        self.warmup_tasks = warmup_tasks
        self.last_task = last_task
        self.kind = profiler
        self.done = 0
        self.profiler: Any = None
        self.wall = 0.0
        self.cpu = 0.0

    def prerun(self, **_: Any) -> None:
        if self.done != self.warmup_tasks or self.wall:
            return
        if self.kind == "pyinstrument":
            from pyinstrument import Profiler

            self.profiler = Profiler(interval=0.0002)
            self.profiler.start()
        elif self.kind == "cprofile":
            import cProfile

            self.profiler = cProfile.Profile()
            self.profiler.enable()
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def postrun(self, **_: Any) -> None:
        self.done += 1
        if self.done != self.last_task:
            return
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        if self.kind == "pyinstrument":
            self.profiler.stop()
        elif self.kind == "cprofile":
            self.profiler.disable()
        from celery.worker import state

        state.should_stop = 0  # the consumer loop stops after this task, as on SIGTERM


def _database(admin: str) -> str:
    import psycopg

    from orchestrator.store.migrate import upgrade

    name = f"orch_profile_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    return url


def _drop(admin: str, url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _full(total: int, redis_url: str, database_url: str) -> tuple[Any, str]:
    """Configure this process as an agents worker and queue ``total`` invocations."""
    import orchestrator
    from config import Settings

    orchestrator.configure(Settings(redis_url=redis_url, database_url=database_url,
                                    workflow_modules=["tests.workloads"]))
    from orchestrator import subsystems
    from workers.app import app

    subsystems.current().runner  # noqa: B018 - what worker_process_init does
    for i in range(total):
        orchestrator.submit("pipeline-5", {"n": i})
    return app, "agents"


def _bare(total: int, redis_url: str) -> tuple[Any, str]:
    """Import the bare baseline app and queue ``total`` five-task chains."""
    from celery import chain

    os.environ.setdefault("BENCH_COUNTER", f"bench:profile:{uuid.uuid4().hex[:8]}")
    from bench_bare_app import app

    for i in range(total):
        sigs = [app.signature("bare.noop", args=(i,), queue="bare")]
        sigs += [app.signature("bare.noop", queue="bare") for _ in range(STEPS - 2)]
        sigs.append(app.signature("bare.last", queue="bare"))
        chain(*sigs).apply_async()
    return app, "bare"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=("full", "bare"), default="full")
    parser.add_argument("--invocations", type=int, default=300, help="profiled workflows")
    parser.add_argument("--warmup", type=int, default=30, help="workflows run first, unprofiled")
    parser.add_argument("--profiler", choices=("pyinstrument", "cprofile", "none"),
                        default="pyinstrument")
    parser.add_argument("--top", type=int, default=40, help="entries of the flat listing")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the pyinstrument tree (text) or the cProfile stats here")
    args = parser.parse_args()
    if args.invocations <= 0 or args.warmup < 0:
        parser.error("--invocations must be positive, --warmup not negative")

    redis_url = (os.environ.get("ORCH_REDIS_URL") or os.environ.get("ORCH_TEST_REDIS_URL")
                 or DEFAULT_REDIS)
    admin = os.environ.get("ORCH_TEST_ADMIN_DATABASE_URL", DEFAULT_ADMIN)
    os.environ["ORCH_REDIS_URL"] = redis_url  # the bare app reads its settings from ORCH_*
    import redis
    from celery import signals

    client = redis.Redis.from_url(redis_url)
    queue = "agents" if args.side == "full" else "bare"
    client.delete(queue)
    total = args.warmup + args.invocations
    database_url = _database(admin) if args.side == "full" else ""
    try:
        if args.side == "full":
            app, queue = _full(total, redis_url, database_url)
        else:
            app, queue = _bare(total, redis_url)
        window = Window(args.warmup * STEPS, total * STEPS, args.profiler)
        signals.task_prerun.connect(window.prerun, weak=False)
        signals.task_postrun.connect(window.postrun, weak=False)
        worker = app.Worker(hostname=f"profile-{args.side}-{os.getpid()}@localhost",
                            pool_cls="solo", concurrency=1, queues=[queue],
                            loglevel="WARNING", quiet=True, without_gossip=True,
                            without_mingle=True, task_events=True, prefetch_multiplier=1,
                            redirect_stdouts=False)
        worker.start()
    finally:
        client.delete(queue)
        if database_url:
            from orchestrator import runtime

            runtime.current().close()
            _drop(admin, database_url)
    steps = args.invocations * STEPS
    print(f"\n{args.side}: {args.invocations} invocations ({steps} step tasks) after "
          f"{args.warmup} warm-up; profiler {args.profiler}")
    print(f"  wall {window.wall:.3f}s = {window.wall / steps * 1e6:.0f} us/step; "
          f"process CPU {window.cpu:.3f}s = {window.cpu / steps * 1e6:.0f} us/step")
    if args.profiler == "pyinstrument":
        profiler = window.profiler
        flat = profiler.output_text(flat=True, flat_time="total", show_all=False)
        print("\n".join(flat.splitlines()[: args.top + 8]))
        if args.out:
            args.out.write_text(profiler.output_text(show_all=False))
    elif args.profiler == "cprofile":
        import pstats

        pstats.Stats(window.profiler).sort_stats("cumulative").print_stats(args.top)
        if args.out:
            window.profiler.dump_stats(args.out)


if __name__ == "__main__":
    main()
