"""The baseline of bench_llm.py: what a pilot does on plain Celery. A task with Celery's
``rate_limit`` (per worker, not global) calls the provider with the official ``openai``
client and its default retries (2), keys taken round-robin.

Workers: ``PYTHONPATH=scripts celery -A bench_plain_llm_app worker -Q plain-llm``.
"""

from __future__ import annotations

import itertools
import os
import threading
import time

import openai
import redis
from celery import Celery

from config import build_celery_config, load_settings

settings = load_settings()
app = Celery("plain-llm")
app.conf.update(build_celery_config(settings))
app.conf.task_routes = {"plain.*": {"queue": "plain-llm"}}
RATE_LIMIT = os.environ.get("BENCH_RATE_LIMIT") or None
PREFIX = os.environ.get("BENCH_PREFIX", "bench:plain")
_local = threading.local()
_keys = itertools.cycle(settings.api_keys())
_lock = threading.Lock()


def _clients() -> tuple[redis.Redis, dict[str, openai.OpenAI]]:
    if not hasattr(_local, "redis"):
        _local.redis = redis.Redis.from_url(settings.redis_url or "")
        _local.openai = {key: openai.OpenAI(base_url=settings.llm_endpoint, api_key=key)
                         for key in settings.api_keys()}
    return _local.redis, _local.openai


@app.task(name="plain.ask", rate_limit=RATE_LIMIT)
def ask(question: str, submitted: float) -> None:
    client, providers = _clients()
    with _lock:
        key = next(_keys)
    try:
        providers[key].chat.completions.create(
            model=settings.llm_model, max_tokens=64,
            messages=[{"role": "user", "content": question}])
        client.hincrby(PREFIX, "ok", 1)
    except openai.APIError as exc:
        client.hincrby(PREFIX, f"failed:{type(exc).__name__}", 1)
    client.rpush(PREFIX + ":latency", f"{time.time() - submitted:.4f}")
