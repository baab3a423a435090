"""``orchestrator reconciler``: the fleet's safety net, until stopped (one is active,
the others stand by)."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from orchestrator import logs, subsystems


def run_reconciler() -> None:
    """Reconcile stalled invocations until SIGTERM or Ctrl-C."""
    sub = subsystems.current()
    logs.configure(sub.settings.log_format)
    reconciler = sub.reconciler()
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logging.info("reconciler started: stall after %.0fs, a pass every %.1fs",
                 reconciler.stall_seconds, reconciler.interval)
    reconciler.run(stop)
    logging.info("reconciler stopped")
