"""Paused queues, as each worker sees them: a consumer bootstep.

`orchestrator pause Q` names the queue in Redis (:mod:`orchestrator.ops.queues`); every
worker looks there before it takes its first message and then about once a second, and
stops consuming the paused queues of its own profile (the queues it was started with)
or starts again once they are resumed. Steps in flight finish.

Why not Celery's ``cancel_consumer``/``add_consumer`` broadcasts: a broadcast reaches only
the workers running at that moment (one started or restarted later consumes the paused
queue again), and ``add_consumer Q`` makes *every* worker consume Q, agents and llm
workers included, which breaks the worker profiles. Here each worker decides for itself,
from the pause state and its own queues.

The check runs on the consumer's timer, in the event loop's thread, so it never races
the consumer; before the loop starts, :meth:`QueuePauses.start` cancels the paused queues
at once, and a restarted worker takes nothing from them.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import bootsteps

from orchestrator import runtime
from orchestrator.constants import QUEUE_PAUSES

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0  # seconds between two looks at the pause state


def plan(own: set[str], consuming: set[str], paused: set[str]) -> tuple[set[str], set[str]]:
    """(queues to stop consuming, queues to consume again) for a worker started for
    ``own``, consuming ``consuming`` now, with ``paused`` paused fleet-wide. Only its own
    queues are ever started again."""
    return (own & consuming & paused), (own - paused - consuming)


class QueuePauses(bootsteps.StartStopStep):
    """Keeps the worker's consumption in line with the fleet's paused queues."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    label = "queue pauses"

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        # The worker's profile: the queues it was started with (-Q). Read once, before
        # any pause deselects one of them.
        self.own = set(c.app.amqp.queues.consume_from)
        self.client: redis.Redis | None = None
        self.timer: Any = None
        self.failing = False

    def start(self, c: Any) -> None:
        if self.client is None:
            self.client = redis.Redis.from_url(runtime.current().redis_url,
                                               socket_timeout=5, socket_connect_timeout=5)
        self.check(c)
        self.timer = c.timer.call_repeatedly(CHECK_INTERVAL, self.check, (c,), priority=10)

    def stop(self, c: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def shutdown(self, c: Any) -> None:
        self.stop(c)
        if self.client is not None:
            self.client.close()
            self.client = None

    def check(self, c: Any) -> None:
        """Stop or restart consuming as the pause state says; on a Redis error, keep
        consuming as now and try again at the next tick."""
        consumer = c.task_consumer
        if consumer is None or self.client is None:
            return
        try:
            paused = {name.decode() for name in self.client.hkeys(QUEUE_PAUSES)}
        except redis.RedisError as exc:
            if not self.failing:
                log.warning("cannot read paused queues (%s): consuming as before", exc)
            self.failing = True
            return
        self.failing = False
        consuming = {queue.name for queue in consumer.queues}
        stop, again = plan(self.own, consuming, paused)
        for queue in sorted(stop):
            log.warning("queue %s is paused: no longer taking its messages", queue)
            c.cancel_task_queue(queue)
        for queue in sorted(again):
            log.warning("queue %s is resumed: taking its messages again", queue)
            c.add_task_queue(queue)
