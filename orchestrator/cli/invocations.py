"""Work on invocations: ``inspect ID``, ``invocations``, ``cancel ID``, ``replay ID...``."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from orchestrator.cli.output import EXIT_BAD_INPUT, fail, out, table
from orchestrator.invocation import Invocation

PANEL = "Work"
app = typer.Typer()

AsJson = Annotated[bool, typer.Option("--json", help="machine-readable output")]
Since = Annotated[str | None, typer.Option(
    help="only those created since: a duration back from now (30m, 1h, 2d) or an ISO time")]
OUTPUT_CHARS = 400  # what `inspect` shows of an output or payload without --full
CELL_CHARS = 60  # of a step's output in the steps table

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str | None) -> datetime | None:
    """``30m``, ``1h``, ``2d`` back from now, or an ISO 8601 time; None for None."""
    if value is None:
        return None
    found = _DURATION.match(value.strip())
    if found:
        seconds = float(found.group(1)) * _UNITS[found.group(2)]
        return datetime.now(UTC) - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise fail(f"--since: expected a duration like 30m, 1h, 2d or an ISO time, got "
                   f"{value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _clip(value: Any, full: bool, chars: int = OUTPUT_CHARS) -> str:
    text = json.dumps(value, ensure_ascii=False)
    if full or len(text) <= chars:
        return text
    return f"{text[:chars]}... ({len(text)} characters; --full shows all)"


def _when(at: datetime | None) -> str:
    return at.isoformat(timespec="milliseconds") if at else "-"


def timeline(invocation: Invocation) -> list[tuple[datetime, str]]:
    """What happened to the invocation, in order."""
    events = [(invocation.created_at, "submitted")]
    if invocation.started_at:
        events.append((invocation.started_at, "first step started"))
    for step in invocation.steps:
        events.append((step.started_at, f"step {step.name} started (attempt {step.attempts})"))
        if step.finished_at:
            what = "done" + (" (fallback)" if step.fallback else "")
            if step.status.value != "done":
                what = f"failed: {step.error}"
            events.append((step.finished_at, f"step {step.name} {what}"))
    if invocation.replayed_at:
        events.append((invocation.replayed_at, f"replayed (replay {invocation.replays})"))
    if invocation.finished_at:
        events.append((invocation.finished_at, f"ended {invocation.status.value}"))
    return sorted(events, key=lambda event: event[0])


def _inspect_json(invocation: Invocation) -> dict[str, Any]:
    return {
        "id": invocation.id, "workflow": invocation.workflow,
        "status": invocation.status.value, "payload": invocation.payload,
        "output": invocation.output, "error": invocation.error,
        "tokens": {"prompt": invocation.tokens.prompt,
                   "completion": invocation.tokens.completion},
        "created_at": _when(invocation.created_at),
        "finished_at": _when(invocation.finished_at) if invocation.finished_at else None,
        "replays": invocation.replays,
        "steps": [{"name": s.name, "kind": s.kind, "status": s.status.value,
                   "attempts": s.attempts, "duration_s": s.duration,
                   "tokens": s.tokens.total, "fallback": s.fallback, "error": s.error,
                   "output": s.output} for s in invocation.steps],
        "timeline": [{"at": _when(at), "event": what} for at, what in timeline(invocation)],
    }


@app.command(rich_help_panel=PANEL)
def inspect(
    invocation_id: Annotated[str, typer.Argument(help="the invocation's id")],
    full: Annotated[bool, typer.Option("--full", help="outputs and payload whole")] = False,
    as_json: AsJson = False,
) -> None:
    """One invocation: payload, each step (status, attempts, duration, tokens, fallback,
    error, output) and its timeline."""
    import orchestrator

    invocation = orchestrator.get(invocation_id)
    if as_json:
        out.print_json(data=_inspect_json(invocation))
        return
    out.print(f"[bold]{invocation.id}[/]  {invocation.workflow}  "
              f"[bold]{invocation.status.value}[/]  tokens {invocation.tokens.total}"
              + (f"  replays {invocation.replays}" if invocation.replays else ""),
              highlight=False)
    out.print(f"payload: {_clip(invocation.payload, full)}", highlight=False, markup=False)
    if invocation.error:
        out.print(f"error: {invocation.error}", highlight=False, markup=False)
    if invocation.finished:
        out.print(f"output: {_clip(invocation.output, full)}", highlight=False, markup=False)
    out.print(table("steps", ["#", "step", "kind", "status", "attempts", "duration",
                              "tokens", "fallback", "error / output"],
                    [(str(s.index), s.name, s.kind, s.status.value, str(s.attempts),
                      f"{s.duration:.3f}s" if s.duration is not None else "-",
                      str(s.tokens.total), "yes" if s.fallback else "",
                      s.error or _clip(s.output, full, CELL_CHARS))
                     for s in invocation.steps],
                    right=["#", "attempts", "duration", "tokens"]))
    out.print(table("timeline", ["at", "event"],
                    [(_when(at), what) for at, what in timeline(invocation)]))


@app.command("invocations", rich_help_panel=PANEL)
def list_invocations(
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, "
                                                     "failed, cancelled")] = None,
    workflow: Annotated[str | None, typer.Option(help="workflow name")] = None,
    since: Since = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: AsJson = False,
) -> None:
    """Invocations, newest first."""
    import orchestrator

    found = orchestrator.invocations(status=status, workflow=workflow,
                                     since=parse_since(since), limit=limit)
    if as_json:
        out.print_json(data=[{"id": i.id, "workflow": i.workflow, "status": i.status.value,
                              "created_at": _when(i.created_at),
                              "finished_at": _when(i.finished_at) if i.finished_at else None,
                              "latency_s": i.latency, "error": i.error} for i in found])
        return
    out.print(table(f"invocations ({len(found)})",
                    ["id", "workflow", "status", "created", "latency", "error"],
                    [(i.id, i.workflow, i.status.value, _when(i.created_at),
                      f"{i.latency:.2f}s" if i.latency is not None else "-",
                      (i.error or "")[:80]) for i in found], right=["latency"]))


@app.command(rich_help_panel=PANEL)
def cancel(
    invocation_id: Annotated[str, typer.Argument(help="the invocation's id")],
    reason: Annotated[str | None, typer.Option(help="recorded on the invocation")] = None,
) -> None:
    """Cancel a queued or running invocation: no further step starts."""
    import orchestrator

    invocation = orchestrator.cancel(invocation_id, reason=reason)
    out.print(f"{invocation.id} {invocation.status.value}: {invocation.error or ''}",
              highlight=False, markup=False)


@app.command(rich_help_panel=PANEL)
def replay(
    invocation_ids: Annotated[list[str], typer.Argument(help="ids of failed or cancelled "
                                                            "invocations")],
) -> None:
    """Run failed or cancelled invocations again from their first step that did not
    succeed (same ids, the earlier steps' outputs reused)."""
    import orchestrator
    from orchestrator.errors import OrchestratorError

    failures = 0
    for invocation_id in invocation_ids:
        try:
            orchestrator.replay(invocation_id)
        except OrchestratorError as exc:
            failures += 1
            fail(str(exc))
            continue
        out.print(f"{invocation_id} queued again", highlight=False)
    if failures:
        raise typer.Exit(EXIT_BAD_INPUT)
