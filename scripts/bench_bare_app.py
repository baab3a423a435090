"""Bare Celery baseline for bench_overhead.py: five no-op tasks, same broker settings.

Workers: ``PYTHONPATH=scripts celery -A bench_bare_app worker -Q bare``.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

from config import build_celery_config, load_settings

settings = load_settings()
app = Celery("bare")
app.conf.update(build_celery_config(settings))
app.conf.task_routes = {"bare.*": {"queue": "bare"}}
if os.environ.get("BENCH_TRANSPORT") == "orchestrator":
    # bench_overhead's fourth side: bare Celery on the workers' broker transport, to
    # show what the transport alone changes (workers/transport.py).
    from workers.transport import TRANSPORT

    app.conf.broker_transport = TRANSPORT
COUNTER = os.environ.get("BENCH_COUNTER", "bench:bare:done")
_client: redis.Redis | None = None


@app.task(name="bare.noop")
def noop(value: int = 0) -> int:
    return value + 1


@app.task(name="bare.last")
def last(value: int = 0) -> int:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.redis_url or "")
    # The finish time is taken here, in the worker, as the full stack's is (finished_at).
    pipe = _client.pipeline()
    pipe.incr(COUNTER)
    pipe.set(COUNTER + ":last", repr(time.time()))
    pipe.execute()
    return value + 1
