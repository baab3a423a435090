"""``orchestrator breakers``: each breaker's state, error rate and next probe; forcing."""

from __future__ import annotations

from orchestrator import subsystems
from orchestrator.breakers import known_breakers, recent_events
from orchestrator.cli.output import out, table
from orchestrator.errors import UnknownTool

COLORS = {"closed": "green", "open": "red", "half-open": "yellow"}


def _names() -> list[str]:
    sub = subsystems.current()
    sub.load_workflows()
    from orchestrator.tools.registry import tools

    return sorted(set(tools.names()) | set(known_breakers(sub.runtime.redis)))


def show(*, as_json: bool) -> None:
    """Every breaker (declared tools and any with state in Redis), then recent transitions."""
    sub = subsystems.current()
    statuses = [sub.breakers.get(name).status() for name in _names()]
    if as_json:
        out.print_json(data=[
            {"name": s.name, "state": s.state, "forced": s.forced, "error_rate": s.error_rate,
             "failures": s.failures, "calls": s.calls, "next_probe_in_s": s.next_probe_in}
            for s in statuses])
        return
    rows = []
    for s in statuses:
        probe = ("forced: never" if s.forced else
                 "-" if s.next_probe_in is None else f"in {s.next_probe_in:.1f}s")
        rows.append((s.name, f"[{COLORS.get(s.state, 'white')}]{s.state}[/]",
                     f"{s.error_rate:.0%} of {s.calls}", probe))
    out.print(table("circuit breakers",
                    ["breaker", "state", "error rate (window)", "next probe"], rows))
    events = recent_events(sub.runtime.redis, 10)
    if events:
        out.print("recent transitions:")
        for event in events:
            stamp, name, old, new, detail = event.split("|", 4)
            out.print(f"  {float(stamp):.0f} {name}: {old} -> {new} ({detail})",
                      highlight=False)


def force(name: str, state: str) -> None:
    """Force breaker ``name`` into ``state``; raises ``UnknownTool`` for an unknown name."""
    sub = subsystems.current()
    known = _names()
    if name not in known:
        raise UnknownTool(f"no breaker named {name!r} (known: {', '.join(known) or 'none'})")
    sub.breakers.get(name).force(state)
    out.print(f"breaker {name}: forced {state}")
