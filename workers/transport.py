"""The broker transport of workers: kombu's Redis transport, with a channel that closes
cleanly when the broker went away in the middle of a ``BRPOP``.

Why (kombu 5.7.0, celery 5.7.0): when the broker connection is lost, Celery's consumer
first calls ``Connection.collect()`` and then ``Connection.close()``
(``celery/worker/consumer/consumer.py``, ``on_connection_error_after_connected``).

1. ``collect()`` closes the default channel: ``kombu/transport/redis.py``
   ``Channel.close`` starts by reading the pending ``BRPOP`` reply (``_brpop_read``),
   which raises ``ConnectionError`` on the dead socket. ``close`` ends there, before the
   channel is marked closed; ``maybe_close_channel`` swallows the error. ``collect()``
   then detaches the transport from its connection (``transport.client = None``).
2. ``close()`` closes the same channel again. This time it goes all the way, and with
   messages delivered but not acked (tasks running), ``restore_unacked`` needs a new Redis
   client, whose parameters ``_connparams`` reads from ``self.connection.client.hostname``:
   ``AttributeError: 'NoneType' object has no attribute 'hostname'``. That is no
   connection error, so it escapes the consumer's reconnect logic; the worker logs
   "Unrecoverable error", fails to stop its hub, and never takes a message again.

Only a worker that was waiting in ``BRPOP`` (a free slot) *and* had unacked messages
(tasks running) when the broker went away gets there: a busy thread-pool worker (the
``llm`` profile) under load. An idle worker has nothing to restore; a prefork worker with
every slot taken is not in ``BRPOP``.

Here the pending read that fails on a dead connection is given up (there is nothing to
read from a closed socket), and the close goes on while the transport still knows its
connection: the restore fails with a connection error (swallowed by kombu), the channel
is marked closed, and the second close does nothing. The consumer then reconnects as it
does for every other connection loss.

What that failed restore should have given back (messages delivered and not acked: steps
running, retries waiting for their countdown) would otherwise sit in Redis's unacked
hash until the visibility timeout, an hour by default, the retries' in-memory timers
being dropped with the connection. The next channel the process opens, once the broker
answers, gives them back, as the close would have done with the broker there. A step
still running is then delivered twice; its live claim makes the second delivery wait,
and a recorded step is not run again.

The channel also keeps one Redis client for the commands kombu would build a client
for, one by one (see ``Channel.conn_or_acquire``).

Used by the workers' Celery app for ``redis://`` brokers (``workers/app.py``);
``workers/liveness.py`` stays the net for anything else that stops a consumer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger("orchestrator.worker")

# Delivery tags of messages a lost connection could not give back (the broker was away
# when its channel closed), for the next channel to give back once the broker answers.
_left_unacked: set[str] = set()
_left_lock = threading.Lock()


class Channel(kombu_redis.Channel):
    # One client over the channel's pool, for every command that brings none: kombu
    # builds a new ``redis.Redis`` for each (``conn_or_acquire``): every ack, every
    # unacked-index write, every task event published, about 0.1 ms apiece on a small
    # machine, several per step. A client over a pool is thread-safe (each command
    # takes a pool connection), so one serves the channel's threads alike.
    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool
        shared = self._shared_client
        if shared is None or shared.connection_pool is not pool:
            shared = self._shared_client = self._create_client()
        yield shared

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # pings the broker: it answers
        self._give_back_left_unacked()

    def close(self) -> Any:
        if self._in_poll:
            try:
                self._brpop_read()
            except kombu_redis.Empty:
                pass
            except self.connection_errors:
                # The socket is dead: no reply will ever come. Without this, close
                # stops here and a second close fails (see the module docstring).
                pass
        qos = self._qos
        try:
            return super().close()
        except self.connection_errors:
            # Giving the unacked messages back failed (broker away). Left alone they
            # would wait for the visibility timeout (an hour by default): the next
            # channel gives them back instead, as this close would have.
            if qos is not None:
                with _left_lock:
                    _left_unacked.update(qos._delivered)
            raise

    def _give_back_left_unacked(self) -> None:
        with _left_lock:
            tags = sorted(_left_unacked)
            _left_unacked.clear()
        for n, tag in enumerate(tags):
            try:
                # A no-op for a message acked since (its unacked entry is gone).
                self.qos.restore_by_tag(tag)
            except self.connection_errors:
                with _left_lock:
                    _left_unacked.update(tags[n:])
                return
        if tags:
            log.warning("gave back %d message(s) left unacked by the lost broker "
                        "connection", len(tags))


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"
"""The value of Celery's ``broker_transport`` setting for this transport."""
