"""``dlq list|show|replay``: dead letters (failed invocations) with their causes."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli.invocations import AsJson, Since, inspect, parse_since
from orchestrator.cli.output import EXIT_BAD_INPUT, fail, out, table

PANEL = "Incidents"
app = typer.Typer(help="Dead letters: failed invocations with their cause; replay them.",
                  no_args_is_help=True)

Workflow = Annotated[str | None, typer.Option(help="only this workflow")]


@app.command("list")
def list_letters(workflow: Workflow = None, since: Since = None,
                 limit: Annotated[int, typer.Option(min=1, max=10_000)] = 1000,
                 as_json: AsJson = False) -> None:
    """Failed invocations, newest first, and how many per cause."""
    from orchestrator import subsystems
    from orchestrator.ops.dead_letters import cause_counts, dead_letters

    letters = dead_letters(subsystems.current(), workflow=workflow,
                           since=parse_since(since), limit=limit)
    if as_json:
        out.print_json(data=[letter.as_json() for letter in letters])
        return
    out.print(table("dead letters by cause", ["cause", "count"],
                    [(cause, str(n)) for cause, n in cause_counts(letters).items()],
                    right=["count"]))
    out.print(table(f"dead letters ({len(letters)})", ["id", "workflow", "cause", "failed at"],
                    [(d.id, d.workflow, d.cause,
                      d.failed_at.isoformat(timespec="seconds") if d.failed_at else "-")
                     for d in letters]))


@app.command("show")
def show(invocation_id: Annotated[str, typer.Argument(help="the invocation's id")],
         full: Annotated[bool, typer.Option("--full", help="outputs whole")] = False,
         as_json: AsJson = False) -> None:
    """One dead letter, whole (as ``inspect``)."""
    inspect(invocation_id, full=full, as_json=as_json)


@app.command("replay")
def replay(
    invocation_ids: Annotated[list[str] | None, typer.Argument(help="ids to replay")] = None,
    every: Annotated[bool, typer.Option("--all", help="every dead letter")] = False,
    workflow: Workflow = None,
) -> None:
    """Replay dead letters from their first step that did not succeed."""
    import orchestrator
    from orchestrator import subsystems
    from orchestrator.errors import OrchestratorError
    from orchestrator.ops.dead_letters import dead_letters

    if every == bool(invocation_ids):
        raise fail("give invocation ids or --all (with --workflow to narrow it), not both")
    if workflow and not every:
        raise fail("--workflow narrows --all; with ids it has no meaning")
    ids = invocation_ids or [d.id for d in dead_letters(subsystems.current(),
                                                        workflow=workflow, limit=10_000)]
    failures = 0
    for invocation_id in ids:
        try:
            orchestrator.replay(invocation_id)
        except OrchestratorError as exc:
            failures += 1
            fail(f"{invocation_id}: {exc}")
    out.print(f"replayed {len(ids) - failures} of {len(ids)}", highlight=False)
    if failures:
        raise typer.Exit(EXIT_BAD_INPUT)
