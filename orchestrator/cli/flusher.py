"""``orchestrator flusher``: persist every shard's dirty state records until stopped."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from orchestrator import logs, subsystems
from orchestrator.state.flusher import Flusher


def run_flusher(*, batch: int, interval: float, pace: float = 0.0) -> None:
    """One flushing thread per shard; SIGTERM or Ctrl-C stops them after their round."""
    sub = subsystems.current()
    logs.configure(sub.settings.log_format)
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    threads = []
    for shard in sub.runtime.state_shards:
        flusher = Flusher(shard, sub.state_rows, owner=sub.identity.owner() + f":{shard.name}",
                          batch=batch, interval=interval, pace=pace)
        thread = threading.Thread(target=flusher.run, args=(stop,), name=f"flush-{shard.name}")
        thread.start()
        threads.append(thread)
        logging.info("flusher for shard %s started", shard.name)
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)
    logging.info("flusher stopped")
