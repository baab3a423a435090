"""State commands: the agent-state memory layer (``state reshard --to URLS``)."""

from __future__ import annotations

from typing import Annotated

import typer

from config import InvalidSettings, load_settings
from orchestrator import runtime, subsystems
from orchestrator.cli.output import EXIT_FAILED, fail, out

app = typer.Typer(help="The agent-state memory layer.", no_args_is_help=True)


@app.command("reshard")
def reshard(
    to: Annotated[str, typer.Option("--to", help="the new ORCH_STATE_REDIS_URLS")],
) -> None:
    """Prepare a change of memory-layer shards: flush, then drop moved keys' old copies.
    Pause state writers first; start the fleet with the new URLs afterwards."""
    from orchestrator.state.reshard import reshard as move

    sub = subsystems.current()
    try:
        target = runtime.Runtime(load_settings(state_redis_urls=to))
    except InvalidSettings as exc:
        raise fail(f"--to: {exc.message}") from None
    try:
        # Every shard answers before anything moves; an error names where it came from.
        current = (runtime.SHARDS_VARIABLE if sub.settings.state_redis_urls
                   else runtime.REDIS_VARIABLE)
        for shard in sub.runtime.state_shards:
            with runtime.reaching(current, shard.url):
                shard.client.ping()
        for shard in target.state_shards:
            with runtime.reaching("--to", shard.url):
                shard.client.ping()
        report = move(sub.runtime.state_shards, target.state_shards, sub.state_rows,
                      owner=sub.identity.owner())
    finally:
        target.close()
    out.print(f"flushed {report.flushed} records; dropped {report.moved} moved copies; "
              f"{report.stayed} stay; {report.kept_dirty} kept (written during the move)")
    if report.kept_dirty:
        raise typer.Exit(EXIT_FAILED)
