"""The Celery configuration, generated from :class:`config.settings.Settings`."""

from __future__ import annotations

from typing import Any

from kombu import Queue

from config.settings import Settings

AGENTS_QUEUE = "agents"
LLM_QUEUE = "llm"
TOOLS_QUEUE = "tools"
QUEUES = (AGENTS_QUEUE, LLM_QUEUE, TOOLS_QUEUE)

# Task names are part of the wire format: producers send by name, workers register them.
STEP_TASKS = {
    AGENTS_QUEUE: "orchestrator.step.python",
    LLM_QUEUE: "orchestrator.step.llm",
    TOOLS_QUEUE: "orchestrator.step.tool",
}


def build_celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings for producers and workers alike.

    At-least-once delivery: a message is acked only after its task finished, a worker
    lost mid-task gives its message back, and each prefork process reserves one
    message at a time so a crash strands nothing else. The visibility timeout must
    exceed the longest step, or Redis redelivers a step that is still running.
    """
    if not settings.redis_url:
        raise ValueError("ORCH_REDIS_URL must be resolved (embedded or given) before Celery")
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            # Messages of a worker that died whole come back once the visibility timeout
            # has passed, at the next sweep: sweep every tenth of it (at most every 10 s).
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 10)),
            "unacked_restore_throttle": 1,
        },
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": AGENTS_QUEUE,
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],
        "task_routes": {name: {"queue": queue} for queue, name in STEP_TASKS.items()},
        "task_send_sent_event": False,
        "worker_send_task_events": True,
        "worker_hijack_root_logger": False,
        "task_track_started": False,
        "enable_utc": True,
    }
