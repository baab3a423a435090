"""What the CLI prints and how it exits: the consoles, the exit codes, error lines, the JSON
shape of an invocation and tables.

The one place the command line's output is shaped. The library (anything outside
``orchestrator/cli``) never imports it: it returns values and raises
:mod:`orchestrator.errors`, and the commands turn those into lines and exit codes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from config.masking import mask_text
from orchestrator.errors import Backpressure, OrchestratorError, ServiceUnavailable
from orchestrator.invocation import Invocation

# Exit codes (see ../shared/DESIGN.md, "Exit codes").
EXIT_FAILED = 1  # the work failed (an invocation failed or was lost, a service is down)
EXIT_BAD_INPUT = 2  # bad input or configuration; the message says what and how to fix it
EXIT_BACKPRESSURE = 3  # refused for now; retry after the printed number of seconds
EXIT_TIMEOUT = 4  # timed out waiting; the work goes on (the invocation's id is printed)
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

# soft_wrap: an error or an id is one line, whatever the terminal's width.
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``error: message`` on stderr; returns the exit to raise (``raise fail(...)``)."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def error(exc: OrchestratorError) -> int:
    """Print what went wrong on stderr (one line, any URL's password masked); returns the
    exit code: backpressure (3, with its ``retry-after`` line), a service out of reach at
    run time (1), or bad input or configuration (2)."""
    message = escape(mask_text(str(exc)))
    if isinstance(exc, Backpressure):
        err.print(f"[bold yellow]backpressure:[/] {message}", highlight=False)
        err.print(f"retry-after: {exc.retry_after:.1f}", highlight=False)
        return EXIT_BACKPRESSURE
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return EXIT_FAILED if isinstance(exc, ServiceUnavailable) else EXIT_BAD_INPUT


def done(message: str) -> None:
    """A step that went well, as a check-marked line (``up``, ``demo``)."""
    out.print(f"[green]✓[/] {message}")


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], *,
          right: Sequence[str] = ()) -> Table:
    """A rich table of string cells; the columns named in ``right`` are right-aligned."""
    found = Table(title=title)
    for column in columns:
        found.add_column(column, justify="right" if column in right else "left")
    for row in rows:
        found.add_row(*row)
    return found


def invocation_json(invocation: Invocation) -> dict[str, Any]:
    """The invocation as JSON-ready data (timestamps ISO 8601)."""
    return {
        "id": invocation.id,
        "workflow": invocation.workflow,
        "status": invocation.status.value,
        "output": invocation.output,
        "error": invocation.error,
        "tokens": {"prompt": invocation.tokens.prompt,
                   "completion": invocation.tokens.completion,
                   "total": invocation.tokens.total},
        "created_at": invocation.created_at.isoformat(),
        "finished_at": invocation.finished_at.isoformat() if invocation.finished_at else None,
        "latency_s": invocation.latency,
        "steps": [
            {"name": s.name, "kind": s.kind, "status": s.status.value, "attempts": s.attempts,
             "fallback": s.fallback, "duration_s": s.duration, "error": s.error}
            for s in invocation.steps
        ],
    }
