"""``orchestrator``: run the fleet, submit work, watch it, operate it.

This module only mounts the command groups, one module each: :mod:`~orchestrator.cli.fleet`
(``up``, ``demo``, ``worker``, ``flusher``, ``flower``, ``metrics``, ``db``, ``simulate``),
:mod:`~orchestrator.cli.work` (``submit``), :mod:`~orchestrator.cli.invocations`
(``inspect``, ``invocations``, ``cancel``, ``replay``), :mod:`~orchestrator.cli.incidents`
(``status``, ``breakers``), :mod:`~orchestrator.cli.queues` (``pause``, ``resume``,
``drain``, ``purge``), :mod:`~orchestrator.cli.dlq` (``dlq``) and
:mod:`~orchestrator.cli.state` (``state``). What they print and the exit
codes live in :mod:`~orchestrator.cli.output`.

Exit codes: 0 done; 1 the work itself failed (e.g. a demo invocation failed or was lost)
or Redis/PostgreSQL did not answer (the line names the variable);
2 bad input or configuration (the message says what and how to fix it);
3 backpressure (retry after the printed number of seconds).
"""

from __future__ import annotations

import sys

import typer

from orchestrator import runtime
from orchestrator.cli import (
    dlq,
    fleet,
    incidents,
    invocations,
    keys,
    loadtest,
    output,
    queues,
    state,
    work,
)
from orchestrator.errors import OrchestratorError

app = typer.Typer(
    name="orchestrator",
    help="Production orchestration for LLM-agent workflows on Celery.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Unnamed: their commands sit at the top level (`orchestrator up`, `orchestrator submit`).
app.add_typer(fleet.app)
app.add_typer(loadtest.app)
app.add_typer(work.app)
app.add_typer(invocations.app)
app.add_typer(incidents.app)
app.add_typer(queues.app)
app.add_typer(dlq.app, name="dlq", rich_help_panel=dlq.PANEL)
app.add_typer(keys.app, name="keys", rich_help_panel=incidents.PANEL)
app.add_typer(state.app, name="state", rich_help_panel=incidents.PANEL)


def main() -> None:
    """Entry point: run the app, turning orchestrator errors into messages and exit codes.

    A command that fails to reach Redis or PostgreSQL prints one line naming the
    variable (exit 1 for an outage, 2 for a reason in the configuration), not the
    driver's traceback.
    """
    try:
        app()
    except OrchestratorError as exc:
        sys.exit(output.error(exc))
    except KeyboardInterrupt:
        sys.exit(output.EXIT_INTERRUPTED)
    except Exception as exc:
        failure = runtime.service_failure(exc)
        if failure is None:
            raise
        sys.exit(output.error(failure))


if __name__ == "__main__":
    main()
