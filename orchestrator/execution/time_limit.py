"""Time limits of python steps, without Celery's (whose per-task timers in the prefork
pool cost about a tenth of the orchestrator's throughput on short steps).

- **Soft**: a ``SIGALRM`` timer around the step (``setitimer``: two system calls). When it
  fires, ``StepTimeLimitExceeded`` is raised in the step's own code: the invocation fails
  with that reason. Only where the step runs on its process's main thread (the prefork
  pool of the ``agents`` queue); elsewhere signals cannot reach it and this is a no-op.
- **Hard**: a step still running ``HARD_GRACE`` seconds after its soft limit (stuck in
  native code that never returns to Python) gets its process killed by the heartbeat
  thread. The pool replaces the process, the message comes back, and the death counts
  towards ``ORCH_STEP_MAX_DELIVERIES``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from orchestrator.errors import StepFailed

HARD_GRACE = 30.0


class StepTimeLimitExceeded(StepFailed):
    """A python step ran past its soft time limit (``ORCH_STEP_TIME_LIMIT``)."""


def enforceable() -> bool:
    """Whether a soft limit can interrupt code on this thread."""
    return threading.current_thread() is threading.main_thread()


# What the handler below says: the limit of the step running on the main thread.
_running = [""]


def _expired(_signum: int, _frame: FrameType | None) -> None:
    raise StepTimeLimitExceeded(_running[0])


@contextmanager
def soft_limit(seconds: float, step: str) -> Iterator[None]:
    """Raise ``StepTimeLimitExceeded`` inside the block after ``seconds`` (main thread
    only; see the module docstring)."""
    if not enforceable():
        yield
        return
    _running[0] = (f"step {step} ran past its time limit of {seconds:.0f}s "
                   "(ORCH_STEP_TIME_LIMIT)")
    # Where SIGALRM had its default action, the handler stays between steps (the timer
    # is off then): two system calls a step fewer. A handler of someone else's is put
    # back after the step.
    previous = signal.getsignal(signal.SIGALRM)
    if previous is not _expired:
        signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if previous is not _expired and previous not in (signal.SIG_DFL, None):
            signal.signal(signal.SIGALRM, previous)
