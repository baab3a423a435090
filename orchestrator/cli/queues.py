"""Queue control for incidents: ``pause``, ``resume``, ``drain``, ``purge`` (library:
:mod:`orchestrator.ops.queues`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from orchestrator.cli.incidents import PANEL
from orchestrator.cli.output import EXIT_TIMEOUT, done, err, out
from orchestrator.ops.queues import InFlight, QueueControl

app = typer.Typer()

QueueName = Annotated[str, typer.Argument(help="agents, llm or tools")]


def _control() -> QueueControl:
    from orchestrator import subsystems

    rt = subsystems.current().runtime
    return QueueControl(rt.redis, rt.producer)


def _operator() -> str:
    from orchestrator.ops.invocations import operator

    return operator()


@app.command(rich_help_panel=PANEL)
def pause(queue: QueueName,
          reason: Annotated[str | None, typer.Option(help="why, shown by status")] = None,
          ) -> None:
    """Stop every worker (later ones too) taking QUEUE's messages until `resume`.

    Steps in flight finish; submits still succeed (their messages wait).
    """
    found, created = _control().pause(queue, by=_operator(), reason=reason)
    if created:
        done(f"queue {queue} paused: workers stop taking its messages within a second")
    else:
        out.print(f"queue {escape(queue)} was paused already by {escape(found.by)} at "
                  f"{found.at:%Y-%m-%d %H:%M:%S}Z"
                  + (f" ({escape(found.reason)})" if found.reason else ""))


@app.command(rich_help_panel=PANEL)
def resume(queue: QueueName) -> None:
    """Let the workers take QUEUE's messages again, parked ones first.

    Messages parked by `drain --park` go back ahead of newer ones, in their order.
    """
    resumed = _control().resume(queue)
    back = f"; {resumed.unparked} parked messages back in front" if resumed.unparked else ""
    if resumed.was_paused:
        done(f"queue {queue} resumed{back}")
    else:
        done(f"queue {queue} was not paused{back}")


@app.command(rich_help_panel=PANEL)
def drain(
    queue: QueueName,
    park: Annotated[bool, typer.Option(
        "--park", help="move waiting messages to a parking list (back with `resume`)")] = False,
    timeout: Annotated[float | None, typer.Option(
        help="give up after this many seconds (exit 4; the queue stays paused)")] = None,
    reason: Annotated[str | None, typer.Option(help="why, shown by status")] = None,
) -> None:
    """Pause QUEUE, then wait until nothing of it is in flight (exit 0; 4 on --timeout)."""
    control = _control()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                  console=err, transient=False) as progress:
        bar = progress.add_task(f"draining {queue}", total=None, detail="")
        most = 0

        def show(state: InFlight) -> None:
            nonlocal most
            most = max(most, state.total)
            progress.update(bar, total=max(most, 1), completed=max(most, 1) - state.total,
                            detail=_detail(state))

        drained = control.drain(queue, by=_operator(), park=park, timeout=timeout,
                                reason=reason or ("drain --park" if park else "drain"),
                                on_progress=show)
    parked = f", {drained.parked} messages parked" if drained.parked else ""
    if drained.drained:
        done(f"queue {queue} drained in {drained.seconds:.1f}s: nothing in flight, "
             f"{drained.last.waiting} messages waiting{parked}; it stays paused "
             f"until `orchestrator resume {queue}`")
        return
    err.print(f"[bold yellow]timed out:[/] after {drained.seconds:.0f}s still "
              f"{escape(_detail(drained.last))}; queue {escape(queue)} stays paused",
              highlight=False)
    raise typer.Exit(EXIT_TIMEOUT)


def _detail(state: InFlight) -> str:
    parts = [f"{state.total} in flight"]
    if state.unclaimed:
        parts.append(f"{state.unclaimed} held by no live worker (back after the "
                     "visibility timeout)")
    if state.consumers:
        parts.append(f"still consumed by {', '.join(state.consumers)}")
    parts.append(f"{state.waiting} waiting")
    if state.parked:
        parts.append(f"{state.parked} parked")
    return ", ".join(parts)


@app.command(rich_help_panel=PANEL)
def purge(
    queue: QueueName,
    yes: Annotated[bool, typer.Option("--yes", help="purge; without it, only count")] = False,
) -> None:
    """Count QUEUE's waiting messages; --yes removes them, cancelling their invocations.

    Parked messages count as waiting. Each invocation becomes `cancelled`, "purged from
    queue QUEUE by user@host".
    """
    control = _control()
    waiting = control.purge_count(queue)
    if not yes:
        out.print(f"queue {escape(queue)}: {waiting} waiting messages (parked ones "
                  "included) would be purged and their invocations cancelled; run again "
                  "with --yes to do it")
        return
    purged = control.purge(queue, by=_operator())
    done(f"queue {queue}: {purged.messages} messages purged, "
         f"{len(purged.cancelled)} invocations cancelled")
    if purged.ended:
        out.print(f"  {len(purged.ended)} had ended already (left as they were)")
    if purged.unknown:
        out.print(f"  {len(purged.unknown)} unknown to this database: "
                  f"{escape(', '.join(purged.unknown[:10]))}")
    if purged.foreign:
        out.print(f"  {purged.foreign} messages that were no step of ours, dropped")
