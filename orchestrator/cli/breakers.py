"""``orchestrator breakers``: each breaker's state, error rate and next probe; forcing."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from orchestrator import subsystems
from orchestrator.breakers import known_breakers, recent_events
from orchestrator.errors import UnknownTool


def _names() -> list[str]:
    sub = subsystems.current()
    sub.load_workflows()
    from orchestrator.tools.registry import tools

    return sorted(set(tools.names()) | set(known_breakers(sub.runtime.redis)))


def show(*, as_json: bool) -> None:
    sub = subsystems.current()
    statuses = [sub.breakers.get(name).status() for name in _names()]
    console = Console()
    if as_json:
        console.print_json(json.dumps([
            {"name": s.name, "state": s.state, "forced": s.forced, "error_rate": s.error_rate,
             "failures": s.failures, "calls": s.calls, "next_probe_in_s": s.next_probe_in}
            for s in statuses]))
        return
    table = Table(title="circuit breakers")
    for column in ("breaker", "state", "error rate (window)", "next probe"):
        table.add_column(column)
    colors = {"closed": "green", "open": "red", "half-open": "yellow"}
    for s in statuses:
        probe = ("forced: never" if s.forced else
                 "-" if s.next_probe_in is None else f"in {s.next_probe_in:.1f}s")
        table.add_row(s.name, f"[{colors.get(s.state, 'white')}]{s.state}[/]",
                      f"{s.error_rate:.0%} of {s.calls}", probe)
    console.print(table)
    events = recent_events(sub.runtime.redis, 10)
    if events:
        console.print("recent transitions:")
        for event in events:
            stamp, name, old, new, detail = event.split("|", 4)
            console.print(f"  {float(stamp):.0f} {name}: {old} -> {new} ({detail})",
                          highlight=False)


def force(name: str, state: str) -> None:
    sub = subsystems.current()
    if name not in _names():
        raise UnknownTool(f"no breaker named {name!r} (known: {', '.join(_names()) or 'none'})")
    sub.breakers.get(name).force(state)
    Console().print(f"breaker {name}: forced {state}")
