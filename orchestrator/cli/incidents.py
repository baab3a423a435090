"""Incident commands: see what the fleet is doing and step in (``status``,
``breakers [open|close NAME]``)."""

from __future__ import annotations

from typing import Annotated

import typer

PANEL = "Incidents"  # where `orchestrator --help` lists these commands
app = typer.Typer()
breakers_app = typer.Typer(help="Circuit breakers: list, force open, force close.",
                           invoke_without_command=True)
app.add_typer(breakers_app, name="breakers", rich_help_panel=PANEL)

BreakerName = Annotated[str, typer.Argument(help="tool or llm-<provider>")]
AsJson = Annotated[bool, typer.Option("--json", help="machine-readable output")]


@app.command(rich_help_panel=PANEL)
def status(as_json: AsJson = False) -> None:
    """Queue depths, workers and invocations by status."""
    from orchestrator.cli.status import show_status

    show_status(as_json=as_json)


@breakers_app.callback()
def breakers(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Each breaker's state, error rate over its window and time to the next probe."""
    if ctx.invoked_subcommand is None:
        from orchestrator.cli.breakers import show

        show(as_json=as_json)


@breakers_app.command("open")
def breakers_open(name: BreakerName) -> None:
    """Force a breaker open (fallbacks answer) until it is closed again."""
    from orchestrator.cli.breakers import force

    force(name, "open")


@breakers_app.command("close")
def breakers_close(name: BreakerName) -> None:
    """Force a breaker closed (calls go through; the window starts empty)."""
    from orchestrator.cli.breakers import force

    force(name, "closed")
