"""``orchestrator up``: the whole fleet in the foreground until Ctrl-C."""

from __future__ import annotations

import signal
import time
from types import FrameType

from rich.console import Console

from orchestrator import runtime
from orchestrator.devstack.fleet import local_fleet


def run_up() -> None:
    """Start everything, report where it is, and stop it all cleanly on Ctrl-C/SIGTERM."""
    console = Console()
    settings = runtime.current().settings
    stopping = False

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    with local_fleet(settings, say=lambda m: console.print(f"[green]✓[/] {m}")) as fleet:
        signal.signal(signal.SIGTERM, _stop)
        console.print("[bold]fleet up[/]: submit with "
                      "`orchestrator submit support-triage '{...}'`; Ctrl-C stops it all")
        for name, value in fleet.settings.environment().items():
            if name != "ORCH_LLM_API_KEYS":
                console.print(f"  export {name}={value}", highlight=False)
        try:
            while not stopping:
                dead = [w.name for w in fleet.workers if not w.alive]
                if dead:
                    console.print(f"[red]worker(s) exited: {', '.join(dead)}[/]; stopping")
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        console.print("stopping workers, simulators and services ...")
    console.print("[green]stopped[/]")
