"""Work commands: hand the fleet an invocation (``submit``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

import orchestrator
from orchestrator.cli.output import EXIT_FAILED, fail, invocation_json, out
from orchestrator.invocation import InvocationStatus

PANEL = "Work"  # where `orchestrator --help` lists these commands
app = typer.Typer()


@app.command(rich_help_panel=PANEL)
def submit(
    workflow: Annotated[str, typer.Argument(help="registered workflow name")],
    payload_json: Annotated[str, typer.Argument(help="payload as a JSON object")],
    wait: Annotated[bool, typer.Option("--wait", help="wait for the result")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="dedupe key")] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds to --wait")] = 300,
) -> None:
    """Submit one invocation; prints its id (or, with --wait, the invocation as JSON)."""
    try:
        payload = json.loads(payload_json)
    except json.JSONDecodeError as exc:
        raise fail(f"PAYLOAD_JSON is not valid JSON: {exc.msg} at position {exc.pos}") from None
    invocation_id = orchestrator.submit(workflow, payload, idempotency_key=idempotency_key)
    if not wait:
        out.print(invocation_id, highlight=False)
        return
    invocation = orchestrator.wait(invocation_id, timeout=timeout)
    out.print_json(data=invocation_json(invocation))
    if invocation.status is not InvocationStatus.SUCCEEDED:
        raise typer.Exit(EXIT_FAILED)
