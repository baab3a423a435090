"""Threads for tool calls: a bounded pool per tool, so one tool's hangs cost only its own.

A call runs on a thread of its tool's pool and its caller waits at most the tool's timeout.
Python cannot stop a thread, so a call its caller gave up on (timed out, or its breaker
opened) while the tool still runs leaves that thread **hung** until the tool returns on
its own. Hung threads take only their own tool's slots: once every slot of a tool is
hung, a new call to it fails at once with ``TransientStepError`` (its breaker counts the
failure and opens) instead of queueing behind threads that may never come back. Every
other tool keeps its own threads.

Threads are daemons, started on demand up to the pool's size and then kept: a worker
shutting down never waits for a tool that hangs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from orchestrator.errors import TransientStepError

log = logging.getLogger(__name__)
T = TypeVar("T")

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class ToolPool:
    """Up to ``size`` threads running the calls of one tool."""

    def __init__(self, name: str, size: int) -> None:
        if size < 1:
            raise ValueError(f"tool {name!r}: a pool needs at least one thread, got {size}")
        self.name = name
        self.size = size
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # started threads waiting for work, not yet promised a call
        self._hung = 0
        self._closed = False

    @property
    def hung(self) -> int:
        """Threads still running a call their caller abandoned."""
        return self._hung

    @property
    def threads(self) -> int:
        """Threads started so far (never more than ``size``)."""
        return self._threads

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on one of this tool's threads; waits in line while all are
        busy with live calls.

        Raises ``TransientStepError`` at once when every thread is hung.
        """
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the thread pool of tool {self.name!r} is shut down")
            if self._hung >= self.size:
                raise TransientStepError(
                    f"tool {self.name!r}: all {self.size} of its threads are hung in calls "
                    "that outlived its timeout; failing fast until one returns")
            self._work.put((future, fn, args))
            if self._idle:
                self._idle -= 1
            elif self._threads < self.size:
                self._threads += 1
                threading.Thread(target=self._serve, name=f"tool-{self.name}-{self._threads}",
                                 daemon=True).start()
        return future

    def abandon(self, future: Future[Any]) -> bool:
        """Stop waiting for ``future``. Returns True when this leaves its thread hung (the
        call runs on), False when it never started (it is dropped) or already ended."""
        if future.cancel():
            return False
        with self._lock:
            if future.done():
                return False
            self._hung += 1
        started = time.monotonic()

        def returned(_: Future[Any]) -> None:
            with self._lock:
                self._hung -= 1
                still = self._hung
            log.info("tool %s: a call abandoned earlier returned after %.1fs more; %d of "
                     "its %d threads still hung", self.name, time.monotonic() - started,
                     still, self.size)

        future.add_done_callback(returned)  # runs at once if it ended meanwhile
        return True

    def _serve(self) -> None:
        while True:
            work = self._work.get()
            if work is None:
                return
            future, fn, args = work
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as exc:  # handed to the waiting caller
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del work, future, fn, args
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        """Drop calls not started and let idle threads end; hung ones end with the
        process (they are daemons)."""
        with self._lock:
            self._closed = True
            threads = self._threads
        while True:
            try:
                work = self._work.get_nowait()
            except queue.Empty:
                break
            if work is not None:
                work[0].cancel()
        for _ in range(threads):
            self._work.put(None)


class ToolPools:
    """This process's tool pools, one per tool name, each made on first use."""

    def __init__(self) -> None:
        self._pools: dict[str, ToolPool] = {}
        self._lock = threading.Lock()

    def get(self, name: str, size: int) -> ToolPool:
        """The pool of tool ``name`` (``size`` threads when it is made)."""
        found = self._pools.get(name)
        if found is None:
            with self._lock:
                found = self._pools.get(name)
                if found is None:
                    found = self._pools[name] = ToolPool(name, size)
        return found

    def hung(self) -> dict[str, int]:
        """Hung threads per tool, in this process."""
        return {name: pool.hung for name, pool in self._pools.items() if pool.hung}

    def shutdown(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
        for pool in pools:
            pool.shutdown()
