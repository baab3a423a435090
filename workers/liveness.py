"""Consumer liveness: a worker that lost its broker and does not consume again exits.

When the broker connection is lost, Celery's consumer closes it and reconnects. Should
that ever go wrong (kombu 5.7.0 can raise ``AttributeError`` while closing a Redis channel
whose connection died mid-``BRPOP`` with messages unacked: see ``workers/transport.py``),
the worker is left running but takes no message again, for ever. This consumer bootstep
is the net under every such case: once the consumer stops consuming without a shutdown
having been asked for (SIGTERM/SIGINT/SIGQUIT), and has not consumed again for
``ORCH_WORKER_STALL_EXIT_SECONDS``, it logs one line and ends the process with exit code
1, for its supervisor (compose ``restart:``, the local fleet) to start a fresh one.

Nothing is lost by the exit: its unacked messages stay in the broker and come back after
the visibility timeout, and its steps' claims expire so the reconciler re-dispatches
their invocations.

The check runs in a daemon thread of its own, not on the consumer's timer: the event loop
may be the very thing that stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any

from celery import bootsteps
from celery.worker import state

from orchestrator import runtime

log = logging.getLogger("orchestrator.worker")

EXIT_STALLED = 1
CHECK_INTERVAL = 1.0  # seconds between two looks at the consumer


def shutdown_requested() -> bool:
    """A warm or cold shutdown was asked for (by a signal): stopping is intended."""
    return state.should_stop not in (None, False) or state.should_terminate not in (None, False)


class ConsumerLiveness(bootsteps.StartStopStep):
    """Ends the worker once its consumer has been stopped for ``limit`` seconds."""

    requires = ("celery.worker.consumer.tasks:Tasks",)
    label = "consumer liveness"

    def __init__(self, c: Any, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.limit = runtime.current().settings.worker_stall_exit_seconds
        self.consuming = False
        self.stopped_at: float | None = None  # monotonic; None: consuming, or never started
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, c: Any) -> None:
        # Reached after every (re)connection, once the consumer takes messages again.
        with self._lock:
            self.consuming = True
            self.stopped_at = None
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, args=(c,), daemon=True,
                                            name="consumer-liveness")
            self._thread.start()

    def stop(self, c: Any) -> None:
        # The consumer's steps stop on a lost connection (before a reconnect) and on
        # shutdown; which one it was is only known by what follows.
        self._stopped()

    def shutdown(self, c: Any) -> None:
        self._stopped()

    def _stopped(self) -> None:
        with self._lock:
            if self.consuming:
                self.consuming = False
                self.stopped_at = time.monotonic()

    def stalled_for(self, c: Any, now: float) -> float | None:
        """Seconds the consumer has not been consuming, or None while it consumes (or
        before it first did)."""
        with self._lock:
            if self.consuming and c.connection is None:
                # The connection was dropped without the steps being stopped (the
                # consumer's error path gave up half way): count from now.
                self.consuming = False
                self.stopped_at = now
            return None if self.stopped_at is None else now - self.stopped_at

    def _watch(self, c: Any) -> None:
        while True:
            time.sleep(CHECK_INTERVAL)
            stalled = self.stalled_for(c, time.monotonic())
            if stalled is None or stalled < self.limit or shutdown_requested():
                continue
            log.critical(
                "worker stalled: not consuming from the broker for %.0fs since its "
                "connection was lost (ORCH_WORKER_STALL_EXIT_SECONDS=%g); exiting with "
                "code %d for its supervisor to restart it; its unacked messages come "
                "back after the visibility timeout", stalled, self.limit, EXIT_STALLED)
            for handler in logging.getLogger().handlers:
                with contextlib.suppress(Exception):  # exiting anyway
                    handler.flush()
            # Not sys.exit: the main thread may be wedged in the consumer's cleanup, and
            # a clean shutdown is what failed already.
            os._exit(EXIT_STALLED)
