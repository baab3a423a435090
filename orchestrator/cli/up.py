"""``orchestrator up``: the whole fleet in the foreground until Ctrl-C."""

from __future__ import annotations

import signal
import time
from types import FrameType

from orchestrator import runtime
from orchestrator.cli.output import done, out
from orchestrator.devstack.fleet import local_fleet


def run_up() -> None:
    """Start everything, report where it is, and stop it all cleanly on Ctrl-C/SIGTERM."""
    settings = runtime.current().settings
    stopping = False

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    with local_fleet(settings, say=done) as fleet:
        signal.signal(signal.SIGTERM, _stop)
        out.print("[bold]fleet up[/]: submit with "
                  "`orchestrator submit support-triage '{...}'`; Ctrl-C stops it all")
        for name, value in fleet.settings.environment(secrets=False).items():
            out.print(f"  export {name}={value}", highlight=False)
        try:
            while not stopping:
                dead = [w.name for w in fleet.workers if not w.alive]
                if dead:
                    out.print(f"[red]worker(s) exited: {', '.join(dead)}[/]; stopping")
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        out.print("stopping workers, simulators and services ...")
    out.print("[green]stopped[/]")
