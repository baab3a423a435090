"""What a pilot looks like: plain Celery tasks calling the provider with the official
``openai`` client (its default retries), a tool over HTTP with no breaker, and a
read-modify-write of the customer record with no version check.

A Celery app of its own (JSON only, queue :data:`QUEUE`, Celery's defaults otherwise:
early acks, prefetch 4). Workers: ``celery -A orchestrator.lab.pilot -b REDIS_URL worker
-Q lab-pilot --pool threads``. Everything a task needs (endpoints, keys, where to record)
travels in its message, so nothing reads the environment. Each task records its outcome
in the Redis hash ``<prefix>:results``; one that never records is lost.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from celery import Celery

QUEUE = "lab-pilot"
TASK = "lab.pilot.triage"

app = Celery("lab-pilot", set_as_current=False)
app.conf.update(
    task_serializer="json", accept_content=["json"], result_serializer="json",
    task_ignore_result=True, task_default_queue=QUEUE, worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
_local = threading.local()


def customer_key(prefix: str, customer_id: str) -> str:
    return f"{prefix}:customer:{customer_id}"


def results_key(prefix: str) -> str:
    return f"{prefix}:results"


def _redis(url: str) -> Any:
    import redis

    if getattr(_local, "redis_url", None) != url:
        _local.redis = redis.Redis.from_url(url)
        _local.redis_url = url
    return _local.redis


def _openai(base_url: str, key: str) -> Any:
    import openai

    clients = getattr(_local, "openai", None)
    if clients is None:
        clients = _local.openai = {}
    if (base_url, key) not in clients:
        # The pilot's client: defaults (2 retries, a 10-minute timeout).
        clients[(base_url, key)] = openai.OpenAI(base_url=base_url, api_key=key)
    return clients[(base_url, key)]


def _cause(exc: BaseException) -> str:
    import httpx
    import openai
    import redis

    if isinstance(exc, openai.RateLimitError):
        return "LLM 429"
    if isinstance(exc, openai.APIStatusError):
        return f"LLM {exc.status_code}"
    if isinstance(exc, openai.APIConnectionError):
        return "LLM unreachable"
    if isinstance(exc, httpx.TimeoutException):
        return "tool timeout"
    if isinstance(exc, httpx.HTTPError):
        return "tool error"
    if isinstance(exc, redis.RedisError):
        return "state store error"
    return type(exc).__name__


@app.task(name=TASK)
def triage(job: dict[str, Any]) -> None:
    """One support-triage the pilot way; records ``{status, cause, finished, tool_seconds}``."""
    import httpx

    store = _redis(job["redis_url"])
    prefix = job["prefix"]
    record = customer_key(prefix, job["customer_id"])
    tool_seconds = 0.0
    cause = None
    try:
        handled = int(store.hget(record, "tickets_handled") or 0)  # read ...
        llm = _openai(job["llm_url"], job["key"])
        label = llm.chat.completions.create(
            model=job["model"], max_tokens=16,
            messages=[{"role": "system", "content": "Classify the support message into one "
                       "label: billing, shipping, technical, account, other."},
                      {"role": "user", "content": job["message"]}],
        ).choices[0].message.content
        began = time.monotonic()
        try:
            order = httpx.post(f"{job['tools_url']}/tools/lookup_order", timeout=10.0,
                               json={"customer_id": job["customer_id"],
                                     "ticket_id": job["ticket_id"]})
            order.raise_for_status()
        finally:
            tool_seconds = time.monotonic() - began
        llm.chat.completions.create(
            model=job["model"], max_tokens=200,
            messages=[{"role": "system", "content": "Draft a short, polite reply."},
                      {"role": "user", "content": f"Category: {label}\nOrder: {order.text}\n"
                       f"Customer message: {job['message']}"}],
        )
        store.hset(record, "tickets_handled", handled + 1)  # ... write: no version check
    except Exception as exc:
        cause = _cause(exc)
    store.hset(results_key(prefix), job["id"], json.dumps({
        "status": "failed" if cause else "succeeded", "cause": cause,
        "finished": time.time(), "tool_seconds": round(tool_seconds, 4)}))
