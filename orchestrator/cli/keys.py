"""``orchestrator keys [--json]``, ``keys restore FINGERPRINT``: the API keys of every
provider, by fingerprint, and returning one to rotation. The rules and the reads live in
:mod:`orchestrator.llm.rotation`; this module renders."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli.output import fail, out, table

app = typer.Typer(help="API keys by fingerprint: state, headroom; restore one to rotation.",
                  invoke_without_command=True)

AsJson = Annotated[bool, typer.Option("--json", help="machine-readable output")]
Fingerprint = Annotated[str, typer.Argument(help="the key's fingerprint, as `keys` lists it")]

COLORS = {"usable": "green", "cooling": "yellow", "out": "red", "probing": "yellow"}


@app.callback()
def keys(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Each key's state (usable, cooling after a 429, out after a 401/403 until its probe,
    probing), calls in flight and what is left of its requests and tokens this minute."""
    if ctx.invoked_subcommand is not None:
        return
    from orchestrator import subsystems
    from orchestrator.llm.rotation import key_statuses

    statuses = key_statuses(subsystems.current().llm.limiters.values())
    if as_json:
        out.print_json(data=[s.as_json() for s in statuses])
        return
    rows = []
    for s in statuses:
        state = f"[{COLORS.get(s.state.value, 'white')}]{s.state.value}[/]"
        refused, then = "-", "-"
        if s.out is not None:
            refused = f"HTTP {s.out.status} at {s.out.last_at}"
            if s.out.strikes > 1:
                refused += f" ({s.out.strikes} in a row)"
            then = ("probe in flight" if s.state.value == "probing" else
                    f"probe in {s.next_probe_in_s:.0f}s" if s.next_probe_in_s else "probe due")
        elif s.cooling_s > 0:
            then = f"back in {s.cooling_s:.1f}s"
        rows.append((s.provider, s.key, state, refused, then,
                     f"{s.in_flight}/{s.concurrency}", str(s.requests_left),
                     str(s.tokens_left)))
    shown = table("API keys", ["provider", "key", "state", "refused", "next",
                               "in flight", "requests left", "tokens left"], rows,
                  right=["in flight", "requests left", "tokens left"])
    shown.columns[1].no_wrap = True  # a fingerprint is never cut
    shown.columns[1].min_width = 12
    out.print(shown)


@app.command("restore")
def restore(fingerprint: Fingerprint) -> None:
    """Return a key to rotation now, for every provider that has it (unknown: exit 2)."""
    from orchestrator import subsystems
    from orchestrator.llm.rotation import UnknownKey, restore_key

    try:
        restored = restore_key(subsystems.current().llm.limiters.values(), fingerprint)
    except UnknownKey as exc:
        raise fail(str(exc)) from None
    if restored:
        out.print(f"key {fingerprint}: back in rotation ({', '.join(restored)})",
                  highlight=False)
    else:
        out.print(f"key {fingerprint}: already in rotation", highlight=False)
