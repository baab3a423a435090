"""Queue control for incidents: pause, resume, drain, park and purge one queue.

- **pause**: the queue is named in a Redis hash (who, when, why). Every worker watches
  that hash (:mod:`workers.pause`, about once a second, and before it takes its first
  message) and stops or restarts consuming the queues of its *own* profile, so a pause
  holds for workers started or restarted later and a resume never makes a worker take a
  queue it was not started for. Steps in flight finish; producers still submit (their
  messages wait, and admission applies its usual thresholds).
- **drain**: pause, then wait until nothing of the queue is in flight: no task of it
  active, reserved or scheduled in a worker, no message of it delivered and unacknowledged
  in the broker, no worker still consuming it. ``park`` moves the waiting messages aside
  to a parking list, so a broken step can be fixed and redeployed before they run.
- **resume**: parked messages go back ahead of the newer ones, in their order, and the
  pause is lifted, atomically.
- **purge**: the waiting messages (parked ones included) leave the queue atomically and
  every invocation among them is cancelled with the reason; a purge interrupted half-way
  is finished by the next.

Kombu's Redis transport keeps a queue as a list (LPUSH to publish, BRPOP to take: the
oldest message is at the right), messages of priority above 0 in lists of their own
(``<queue>\\x06\\x16<priority>``), and every delivered, unacknowledged message in the
``unacked`` hash (delivery tag -> ``[message, exchange, routing key]``).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery

from config.celery import QUEUES
from orchestrator.constants import QUEUE_PARKED, QUEUE_PAUSES, QUEUE_PURGING, QUEUE_RESUMED
from orchestrator.errors import InvalidState, UnknownInvocation, UnknownQueue
from orchestrator.lua import script

# Kombu's Redis transport (kombu/transport/redis.py): the hash of delivered,
# unacknowledged messages, and how it names a queue's priority lists.
KOMBU_UNACKED = "unacked"
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (3, 6, 9)  # 0 is the queue's own list

# A function that cancels one invocation with a reason (``orchestrator.cancel``).
Canceller = Callable[..., object]


def _by_queue(replies: Mapping[str, Any]) -> dict[str, list[str]]:
    """queue -> nodes consuming it, from ``inspect().active_queues()`` replies."""
    found: dict[str, list[str]] = {}
    for node, queues in replies.items():
        for queue in queues or []:
            found.setdefault(str(queue.get("name")), []).append(node)
    return {name: sorted(nodes) for name, nodes in found.items()}


def queue_lists(queue: str) -> list[str]:
    """The Redis lists holding ``queue``'s waiting messages, in kombu's order of
    preference: the queue itself, then its priority lists."""
    return [queue, *(f"{queue}{KOMBU_PRIORITY_SEP}{p}" for p in KOMBU_PRIORITY_STEPS)]


def known_queue(queue: str) -> str:
    """``queue`` itself; raises ``UnknownQueue`` unless it is one of the fleet's queues."""
    if queue not in QUEUES:
        raise UnknownQueue(f"unknown queue {queue!r}: choose from {', '.join(QUEUES)}")
    return queue


@dataclass(frozen=True)
class QueuedStep:
    """What a step message says about itself (see :func:`decode`)."""

    task_id: str | None
    task: str | None
    invocation_id: str | None
    step: int | None


def decode(message: Mapping[str, Any] | str | bytes) -> QueuedStep | None:
    """Read a kombu envelope as Celery publishes a step: JSON, its ``body`` (base64 when
    ``properties.body_encoding`` says so) the JSON of ``[args, kwargs, embed]``, and a step's
    args ``[context, index]`` with ``context["invocation_id"]``.

    Returns None for what is no kombu envelope; a message that is not a step of ours
    (another task, another serializer) gives a ``QueuedStep`` without an invocation.
    """
    try:
        envelope = json.loads(message) if isinstance(message, str | bytes) else message
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(envelope, Mapping):
        return None
    headers = envelope.get("headers")
    headers = headers if isinstance(headers, Mapping) else {}
    task_id, task = headers.get("id"), headers.get("task")
    found = QueuedStep(task_id if isinstance(task_id, str) else None,
                       task if isinstance(task, str) else None, None, None)
    body = _body(envelope)
    if not (isinstance(body, list) and body and isinstance(body[0], list)):
        return found
    args = body[0]
    if len(args) < 2 or not isinstance(args[0], Mapping):
        return found
    invocation_id, index = args[0].get("invocation_id"), args[1]
    if not isinstance(invocation_id, str):
        return found
    return QueuedStep(found.task_id, found.task, invocation_id,
                      index if isinstance(index, int) else None)


def _body(envelope: Mapping[str, Any]) -> Any:
    if envelope.get("content-type") != "application/json":
        return None
    body = envelope.get("body")
    properties = envelope.get("properties")
    encoding = properties.get("body_encoding") if isinstance(properties, Mapping) else None
    try:
        if encoding == "base64" and isinstance(body, str):
            body = base64.b64decode(body, validate=True)
        return json.loads(body) if isinstance(body, str | bytes) else None
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


@dataclass(frozen=True)
class Pause:
    """A paused queue: who paused it (``user@host``), when, and why."""

    queue: str
    by: str
    at: datetime
    reason: str | None

    def as_json(self) -> dict[str, Any]:
        return {"by": self.by, "at": self.at.isoformat(), "reason": self.reason}

    @classmethod
    def load(cls, queue: str, raw: bytes | str) -> Pause:
        try:
            data = json.loads(raw)
            return cls(queue, str(data.get("by") or "unknown"),
                       datetime.fromtimestamp(float(data.get("at") or 0), UTC),
                       data.get("reason"))
        except (ValueError, TypeError, AttributeError):
            # Written by hand, or by something else: paused all the same.
            return cls(queue, "unknown", datetime.fromtimestamp(0, UTC), None)


@dataclass(frozen=True)
class Resumed:
    queue: str
    was_paused: bool
    unparked: int  # parked messages put back ahead of the newer ones


@dataclass(frozen=True)
class InFlight:
    """What of one queue is in flight, and around it, at one moment."""

    queue: str
    in_workers: dict[str, int]  # node -> tasks of the queue active, reserved or scheduled
    unacked: int  # messages of the queue delivered and not acknowledged (the broker's view)
    total: int  # distinct messages in either
    consumers: list[str]  # nodes still consuming the queue
    waiting: int  # messages in the queue
    parked: int
    nodes: list[str] = field(default_factory=list)  # the workers that answered

    @property
    def done(self) -> bool:
        """Nothing in flight and no worker left that could take another message."""
        return self.total == 0 and not self.consumers

    @property
    def unclaimed(self) -> int:
        """Unacknowledged messages no worker reports holding: a worker died with them,
        and the broker hands them back once the visibility timeout has passed."""
        return max(0, self.total - sum(self.in_workers.values()))


@dataclass(frozen=True)
class Drained:
    drained: bool  # False: the timeout passed first
    last: InFlight
    paused: Pause
    parked: int  # messages in the parking list at the end
    seconds: float


@dataclass(frozen=True)
class Purged:
    queue: str
    messages: int  # taken out of the queue (and any purge left unfinished before)
    cancelled: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)  # had ended already: left as they were
    unknown: list[str] = field(default_factory=list)  # no such invocation in this database
    foreign: int = 0  # messages that were no step of ours: dropped


@dataclass(frozen=True)
class QueueState:
    """One queue as ``status`` shows it."""

    queue: str
    depth: int
    pause: Pause | None
    parked: int
    consumers: list[str]

    def as_json(self) -> dict[str, Any]:
        pause = self.pause
        return {"depth": self.depth, "paused": pause is not None,
                "reason": pause.reason if pause else None,
                "paused_by": pause.by if pause else None,
                "paused_at": pause.at.isoformat() if pause else None,
                "parked": self.parked, "consumers": self.consumers}


class QueueControl:
    """Pause, resume, drain, park and purge the fleet's queues (see the module
    docstring). ``client``: the broker's Redis; ``producer``: a Celery app on that broker,
    for asking the workers what they hold."""

    def __init__(self, client: redis.Redis, producer: Celery, *,
                 inspect_timeout: float = 1.0) -> None:
        self.client = client
        self.producer = producer
        self.inspect_timeout = inspect_timeout
        self._move = script(client, "orchestrator.ops", "move")
        self._resume = script(client, "orchestrator.ops", "resume")

    # -- pause and resume ------------------------------------------------------------

    def pause(self, queue: str, *, by: str, reason: str | None = None) -> tuple[Pause, bool]:
        """Pause ``queue`` fleet-wide; returns the pause in effect and whether it is new
        (a queue paused already keeps its first pause: who, when, why).

        Raises ``UnknownQueue``.
        """
        known_queue(queue)
        record = json.dumps({"by": by, "at": time.time(), "reason": reason})
        created = bool(self.client.hsetnx(QUEUE_PAUSES, queue, record))
        raw = self.client.hget(QUEUE_PAUSES, queue)
        return Pause.load(queue, raw if raw is not None else record), created

    def paused(self) -> dict[str, Pause]:
        """Every paused queue and its pause."""
        raw = self.client.hgetall(QUEUE_PAUSES)
        return {name.decode(): Pause.load(name.decode(), value) for name, value in raw.items()}

    def resume(self, queue: str) -> Resumed:
        """Put ``queue``'s parked messages back ahead of the newer ones, in their order,
        and lift its pause, in one step. Raises ``UnknownQueue``."""
        known_queue(queue)
        moved, was_paused = self._resume(
            keys=[QUEUE_PARKED.format(queue=queue), queue, QUEUE_PAUSES, QUEUE_RESUMED],
            args=[queue])
        return Resumed(queue, bool(was_paused), int(moved))

    # -- what waits, what is parked, what is in flight ---------------------------------

    def depth(self, queue: str) -> int:
        """Messages waiting in ``queue`` (its priority lists included)."""
        with self.client.pipeline(transaction=False) as pipe:
            for name in queue_lists(queue):
                pipe.llen(name)
            return sum(int(n) for n in pipe.execute())

    def parked(self, queue: str) -> int:
        return int(self.client.llen(QUEUE_PARKED.format(queue=queue)))

    def park(self, queue: str) -> int:
        """Move every waiting message of ``queue`` to its parking list, atomically;
        returns how many moved. Raises ``UnknownQueue``."""
        known_queue(queue)
        return int(self._move(keys=[*queue_lists(queue), QUEUE_PARKED.format(queue=queue)]))

    def consumers(self) -> dict[str, list[str]] | None:
        """queue -> nodes consuming it, from the workers that answered; None when none
        did."""
        replies = self._active_queues(None)
        return None if replies is None else _by_queue(replies)

    def _active_queues(self, nodes: list[str] | None) -> dict[str, Any] | None:
        inspect = self.producer.control.inspect(
            timeout=self.inspect_timeout, destination=nodes,
            limit=len(nodes) if nodes else None)
        replies: dict[str, Any] | None = inspect.active_queues()
        return replies

    def in_flight(self, queue: str, *, nodes: list[str] | None = None) -> InFlight:
        """What of ``queue`` the workers hold (active, reserved, scheduled: by
        ``delivery_info["routing_key"]``) and the broker has delivered unacknowledged.

        ``nodes``: the workers to ask (``InFlight.nodes`` of a previous look): their
        replies come back without waiting out the timeout. A worker started since takes
        nothing of a paused queue, and the broker's view counts whatever it holds.
        """
        replies = self._active_queues(nodes) or {}
        answered = sorted(replies)
        consumers = _by_queue(replies).get(queue, [])
        held: set[str] = set()
        in_workers: dict[str, int] = {}
        if answered:
            inspect = self.producer.control.inspect(
                timeout=self.inspect_timeout, destination=answered, limit=len(answered))
            for tasks_by_node, scheduled in ((inspect.active(), False),
                                             (inspect.reserved(), False),
                                             (inspect.scheduled(), True)):
                for node, tasks in (tasks_by_node or {}).items():
                    for task in tasks or []:
                        request = task.get("request", task) if scheduled else task
                        info = request.get("delivery_info") or {}
                        task_id = request.get("id")
                        if info.get("routing_key") == queue and task_id not in held:
                            held.add(task_id)
                            in_workers[node] = in_workers.get(node, 0) + 1
        unacked = self.unacked(queue)
        return InFlight(queue, in_workers, len(unacked), len(held | set(unacked)), consumers,
                        self.depth(queue), self.parked(queue), answered)

    def unacked(self, queue: str) -> list[str]:
        """Task ids (or delivery tags) of ``queue``'s delivered, unacknowledged messages."""
        found = []
        for tag, value in self.client.hscan_iter(KOMBU_UNACKED):
            try:
                message, _exchange, routing_key = json.loads(value)
            except (ValueError, TypeError):
                continue
            if routing_key != queue:
                continue
            step = decode(message) if isinstance(message, Mapping) else None
            found.append(step.task_id if step and step.task_id else tag.decode())
        return found

    def drain(self, queue: str, *, by: str, park: bool = False,
              timeout: float | None = None, interval: float = 1.0,
              reason: str | None = None,
              on_progress: Callable[[InFlight], None] | None = None) -> Drained:
        """Pause ``queue`` (unless paused already), then wait until nothing of it is in
        flight (:meth:`InFlight.done`); with ``park``, waiting messages are moved to the
        parking list as they arrive, and once more at the end. ``on_progress`` gets each
        look. Returns with ``drained`` False once ``timeout`` seconds passed first; the
        queue stays paused either way. Raises ``UnknownQueue``.
        """
        started = time.monotonic()
        pause, _ = self.pause(queue, by=by, reason=reason)
        nodes: list[str] | None = None
        while True:
            if park:
                self.park(queue)
            state = self.in_flight(queue, nodes=nodes)
            nodes = state.nodes or None
            if on_progress is not None:
                on_progress(state)
            elapsed = time.monotonic() - started
            if state.done or (timeout is not None and elapsed >= timeout):
                if park:
                    # A step that ended last may have queued its successor here.
                    self.park(queue)
                return Drained(state.done, state, pause, self.parked(queue), elapsed)
            time.sleep(interval if timeout is None else
                       max(0.0, min(interval, timeout - elapsed)))

    # -- purge -----------------------------------------------------------------------

    def purge_count(self, queue: str) -> int:
        """What a purge of ``queue`` would take now: its waiting and parked messages, plus
        those a purge interrupted before left to finish."""
        known_queue(queue)
        return (self.depth(queue) + self.parked(queue)
                + int(self.client.llen(QUEUE_PURGING.format(queue=queue))))

    def purge(self, queue: str, *, by: str, cancel: Canceller | None = None) -> Purged:
        """Take every waiting message out of ``queue`` at once (parked ones too), then
        cancel each invocation among them with the reason "purged from queue Q by
        user@host".

        A message leaves the purge's own list only once its invocation is cancelled, so
        a purge that stops half-way (a crash, PostgreSQL away) is finished by the next
        one. ``cancel`` defaults to ``orchestrator.cancel``. Raises ``UnknownQueue``.
        """
        known_queue(queue)
        if cancel is None:
            from orchestrator import cancel as cancel_invocation

            cancel = cancel_invocation
        purging = QUEUE_PURGING.format(queue=queue)
        self._move(keys=[*queue_lists(queue), QUEUE_PARKED.format(queue=queue), purging])
        reason = f"purged from queue {queue} by {by}"
        cancelled: list[str] = []
        ended: list[str] = []
        unknown: list[str] = []
        seen: set[str] = set()  # a re-dispatched invocation may have two messages
        messages = foreign = 0
        while (raw := self.client.lindex(purging, -1)) is not None:
            step = decode(raw)
            invocation_id = step.invocation_id if step else None
            if invocation_id is None:
                foreign += 1
            elif invocation_id not in seen:
                seen.add(invocation_id)
                try:
                    cancel(invocation_id, reason=reason)
                    cancelled.append(invocation_id)
                except InvalidState:
                    ended.append(invocation_id)
                except UnknownInvocation:
                    unknown.append(invocation_id)
            # By value: another purge of the queue may be taking from the same list.
            self.client.lrem(purging, -1, raw)
            messages += 1
        return Purged(queue, messages, cancelled, ended, unknown, foreign)

    # -- status ----------------------------------------------------------------------

    def states(self, queues: Iterable[str] = QUEUES,
               consumers: Mapping[str, list[str]] | None = None) -> list[QueueState]:
        """Each queue's depth, pause, parked messages and consumers (``consumers``: as
        :meth:`consumers` returns, or asked for when not given)."""
        if consumers is None:
            consumers = self.consumers() or {}
        pauses = self.paused()
        return [QueueState(q, self.depth(q), pauses.get(q), self.parked(q),
                           list(consumers.get(q, []))) for q in queues]
