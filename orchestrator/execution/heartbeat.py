"""What running steps say about themselves, batched: one thread per process.

- **Leases.** Every step claim this process holds is renewed every third of its lease,
  all in one Redis round trip, for as long as the step runs (waiting in the LLM limiter
  included). A claim is dead only when its lease ran out without renewal: a redelivered
  step never runs beside a live one.
- **Hard time limits.** A claim held with a deadline (a python step on its process's main
  thread, see :mod:`orchestrator.execution.time_limit`) still held past it gets its
  process killed: the step is stuck where its soft limit cannot reach it.
- **"running".** The first step of an invocation to start queues a mark; the marks are
  written to PostgreSQL in one statement per tick, off the step's own path, so status
  and metrics tell waiting invocations from running ones.

A step shorter than one tick costs no round trip here at all.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Protocol

from orchestrator.execution.claims import StepClaims
from orchestrator.execution.classify import is_transient

log = logging.getLogger(__name__)

# How often the thread wakes: the most a "running" mark waits.
TICK_SECONDS = 0.5

Claim = tuple[str, int, str]  # invocation id, step index, owner


class RunningMarks(Protocol):
    def mark_running(self, invocation_ids: list[str]) -> None: ...


class Heartbeat:
    """Renews this process's claims and writes its "running" marks."""

    def __init__(self, claims: StepClaims, marks: RunningMarks, *, lease_seconds: float,
                 tick: float = TICK_SECONDS) -> None:
        self.claims = claims
        self.marks = marks
        self.lease = lease_seconds
        self.renew_every = max(tick, lease_seconds / 3)
        self.tick = min(tick, self.renew_every)
        self._held: dict[Claim, float | None] = {}  # claim -> hard deadline (monotonic)
        self._started: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def hold(self, claim: Claim, *, deadline: float | None = None) -> None:
        """Renew ``claim`` until :meth:`drop`; past ``deadline`` (``time.monotonic()``),
        kill this process (see the module docstring)."""
        with self._lock:
            self._held[claim] = deadline
        self._ensure_thread()

    def drop(self, claim: Claim) -> None:
        with self._lock:
            self._held.pop(claim, None)

    @staticmethod
    def kill() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def started(self, invocation_id: str) -> None:
        """Queue the "running" mark of an invocation whose first step began."""
        with self._lock:
            self._started.append(invocation_id)
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        # Threads do not survive fork: a prefork child starts its own on first use.
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if (self._thread is not None and self._pid == os.getpid()
                    and self._thread.is_alive()):
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="orch-heartbeat",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        since_renewal = 0.0
        while True:
            self._wake.wait(self.tick)
            since_renewal += self.tick
            renew = since_renewal >= self.renew_every
            try:
                self.beat(renew=renew)
            except Exception:
                # The thread must outlive any one bad round, or leases would lapse.
                log.exception("heartbeat round failed; next round in %.1fs", self.tick)
            if renew:
                since_renewal = 0.0

    def beat(self, *, renew: bool = True) -> None:
        """One round: write queued marks and, with ``renew``, renew every held claim."""
        with self._lock:
            started, self._started = self._started, []
            held = list(self._held) if renew else []
            overdue = [c for c, d in self._held.items() if d is not None
                       and time.monotonic() > d]
        if overdue:
            claim = overdue[0]
            log.critical("step %d of %s is stuck past its hard time limit: killing this "
                         "process (pid %d); the step will be delivered again", claim[1],
                         claim[0], os.getpid())
            self.kill()
        if started:
            try:
                self.marks.mark_running(started)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("could not mark %d invocations running (%s); the end record "
                            "will say what happened", len(started), type(exc).__name__)
        if held:
            try:
                renewed = self.claims.renew(held, self.lease)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("could not renew %d step claims (%s): retrying next tick",
                            len(held), type(exc).__name__)
                return
            for claim, ok in zip(held, renewed, strict=True):
                if not ok:
                    log.warning("step %d of %s: claim no longer held by this delivery",
                                claim[1], claim[0])
                    self.drop(claim)
