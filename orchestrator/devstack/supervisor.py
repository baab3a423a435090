"""The local fleet's supervisor: a worker that exits on its own is started again, as
compose's ``restart: unless-stopped`` does for the deployed fleet.

A worker exits on its own when its consumer stalls (``workers/liveness.py``, exit code 1),
or when it crashes. One it was asked to stop or kill (:meth:`ChildProcess.stop`,
:meth:`ChildProcess.kill`: ``orchestrator up`` ending, the load lab's SIGKILL fault) is
left alone until whoever stopped it starts it again. A worker that keeps exiting is
started again after a growing pause (1 s, doubled each time up to 30 s), so a worker that
cannot start (its configuration refused) does not spin.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from orchestrator.devstack.processes import WorkerProcess
from orchestrator.errors import ServiceError

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0  # seconds between two looks at the workers
FIRST_PAUSE = 1.0
LONGEST_PAUSE = 30.0


class Supervisor:
    """Watches ``workers`` in a daemon thread from :meth:`start` until :meth:`stop`."""

    def __init__(self, workers: Sequence[WorkerProcess], *,
                 say: Callable[[str], None] = lambda _m: None) -> None:
        self.workers = workers
        self.say = say
        self.exits: dict[str, list[int | None]] = {}  # exit codes of each worker it restarted
        self._pause: dict[str, float] = {}
        self._not_before: dict[str, float] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fleet-supervisor")

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching; returns once a restart under way has finished."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(CHECK_INTERVAL):
            for worker in list(self.workers):
                if self._stopping.is_set():
                    return
                if worker.exited_on_its_own and time.monotonic() >= self._not_before.get(
                        worker.name, 0.0):
                    self._restart(worker)

    def _restart(self, worker: WorkerProcess) -> None:
        code = worker.returncode
        pause = self._pause.get(worker.name, 0.0)
        self._pause[worker.name] = min(LONGEST_PAUSE, max(FIRST_PAUSE, pause * 2))
        self._not_before[worker.name] = time.monotonic() + self._pause[worker.name]
        self.exits.setdefault(worker.name, []).append(code)
        message = f"worker {worker.name} exited (code {code}): starting it again"
        log.warning(message)
        self.say(message)
        try:
            worker.start()
        except ServiceError as exc:
            log.error("worker %s did not start again (next try in %.0fs): %s",
                      worker.name, self._pause[worker.name], exc)
            worker.stopped = False  # stopped by its own failed start: try again
            return
        # Up again: the next exit, if it comes much later, starts from a short pause.
        self._pause[worker.name] = FIRST_PAUSE / 2
