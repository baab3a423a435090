"""Faults on a schedule, the same for every profile: when each starts and ends, and the
thread that applies them to a profile's :class:`FaultTarget`."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator.lab.scenario import Scenario

log = logging.getLogger(__name__)


class FaultTarget(Protocol):
    """What a profile lets the lab break. ``on`` starts a fault, ``False`` ends it."""

    def tool_outage(self, on: bool) -> None: ...
    def llm_storm(self, on: bool) -> None: ...
    def llm_5xx(self, on: bool) -> None: ...
    def kill_worker(self, on: bool) -> None: ...
    def restart_redis(self, on: bool) -> None: ...
    def restart_postgres(self, on: bool) -> None: ...
    def kill_reconciler(self, on: bool) -> None: ...


FAULT_KINDS = ("tool_outage", "llm_storm", "llm_5xx", "kill_worker", "restart_redis",
               "restart_postgres", "kill_reconciler")


@dataclass(frozen=True)
class Fault:
    """``kind`` names a :class:`FaultTarget` method; ``start``/``end`` in lab seconds."""

    kind: str
    label: str
    start: float
    end: float


def fault_plan(scn: Scenario) -> list[Fault]:
    """The faults of a run over the arrival window, scaled to its length.

    The 5xx incident lasts 60 real seconds, i.e. ``60 / compression`` lab seconds (at
    least 5); a killed worker and the reconciler come back after a twentieth of the run.
    """
    total = scn.seconds

    def at(fraction: float) -> float:
        return round(fraction * total, 1)

    back = max(3.0, total / 20)
    return [
        Fault("tool_outage", "lookup_order outage (hangs)", at(0.10),
              at(0.10) + max(6, total / 12)),
        Fault("llm_storm", "429 storm (limits lowered)", at(0.22), at(0.22) + max(6, total / 16)),
        Fault("llm_5xx", "provider 5xx (60 s)", at(0.33),
              at(0.33) + max(5.0, 60.0 / scn.compression)),
        Fault("kill_worker", "SIGKILL a worker", at(0.52), at(0.52) + back),
        Fault("restart_redis", "Redis restart", at(0.60), at(0.60) + 1),
        Fault("restart_postgres", "PostgreSQL restart", at(0.68), at(0.68) + 1),
        Fault("kill_reconciler", "reconciler killed", at(0.76), at(0.76) + back),
    ]


@dataclass
class FaultLog:
    """What was applied when (lab seconds), and what failed to apply."""

    applied: list[dict[str, object]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class FaultInjector(threading.Thread):
    """Applies ``plan`` to ``target`` from ``started`` (``time.monotonic()``) until done
    or stopped; a fault that fails to apply is logged and the run goes on."""

    def __init__(self, plan: list[Fault], target: FaultTarget, started: float) -> None:
        super().__init__(name="lab-faults", daemon=True)
        self.events = sorted([(f.start, f, True) for f in plan] + [(f.end, f, False) for f in plan],
                             key=lambda e: (e[0], not e[2]))
        self.target = target
        self.started = started
        self.log = FaultLog()
        self._stop_event = threading.Event()

    def run(self) -> None:
        for when, fault, on in self.events:
            wait = self.started + when - time.monotonic()
            if wait > 0 and self._stop_event.wait(wait):
                return
            began = time.monotonic() - self.started
            try:
                getattr(self.target, fault.kind)(on)
            except Exception as exc:  # a fault that cannot be applied must not end the run
                log.warning("fault %s (%s) failed: %s", fault.kind, on, exc)
                self.log.errors.append(f"{fault.label} ({'start' if on else 'end'}): {exc}")
            self.log.applied.append({"kind": fault.kind, "label": fault.label, "on": on,
                                     "at": round(began, 2),
                                     "took": round(time.monotonic() - self.started - began, 2)})

    def stop(self) -> None:
        self._stop_event.set()
