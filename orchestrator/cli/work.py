"""Work commands: hand the fleet an invocation (``submit``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

import orchestrator
from orchestrator.cli.output import EXIT_FAILED, EXIT_TIMEOUT, err, fail, invocation_json, out
from orchestrator.errors import InvocationTimeout
from orchestrator.invocation import InvocationStatus

PANEL = "Work"  # where `orchestrator --help` lists these commands
app = typer.Typer()

PAYLOAD_HELP = ("the payload: a JSON object, @FILE to read it from a file, or - to read it "
                "from stdin (payloads over ~128 KiB cannot travel as an argument)")


def read_payload(source: str) -> Any:
    """The payload named by ``source``: JSON text, ``@path`` (a file) or ``-`` (stdin).

    Raises the exit for bad input (2) with a message naming the source when it cannot be
    read or is not JSON.
    """
    if source == "-":
        where, raw = "the payload on stdin", sys.stdin.read()
    elif source.startswith("@"):
        path = Path(source[1:])
        where = f"the payload file {str(path)!r}"
        try:
            raw = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise fail(f"cannot read {where}: {reason}") from None
    else:
        where, raw = "PAYLOAD_JSON", source
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise fail(f"{where} is not valid JSON: {exc.msg} at position {exc.pos}") from None


@app.command(rich_help_panel=PANEL)
def submit(
    workflow: Annotated[str, typer.Argument(help="registered workflow name")],
    payload: Annotated[str, typer.Argument(metavar="(PAYLOAD_JSON | @FILE | -)",
                                           help=PAYLOAD_HELP)],
    wait: Annotated[bool, typer.Option("--wait", help="wait for the result")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="dedupe key")] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds to --wait")] = 300,
) -> None:
    """Submit one invocation; prints its id (or, with --wait, the invocation as JSON).

    Exits 1 when the awaited invocation did not succeed, 4 when --timeout passed first
    (its id is printed: the invocation goes on).
    """
    data = read_payload(payload)
    invocation_id = orchestrator.submit(workflow, data, idempotency_key=idempotency_key)
    if not wait:
        out.print(invocation_id, highlight=False)
        return
    try:
        invocation = orchestrator.wait(invocation_id, timeout=timeout)
    except InvocationTimeout as exc:
        out.print(invocation_id, highlight=False)
        err.print(f"[bold yellow]timed out:[/] {exc}; it goes on "
                  f"(`orchestrator inspect {invocation_id}` shows it)", highlight=False)
        raise typer.Exit(EXIT_TIMEOUT) from None
    out.print_json(data=invocation_json(invocation))
    if invocation.status is not InvocationStatus.SUCCEEDED:
        raise typer.Exit(EXIT_FAILED)
