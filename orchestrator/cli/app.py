"""``orchestrator``: run the fleet, submit work, watch it, operate it.

Exit codes: 0 done; 1 the work itself failed (e.g. a demo invocation failed or was lost);
2 bad input or configuration (the message says what and how to fix it);
3 backpressure (retry after the printed number of seconds).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from orchestrator.errors import Backpressure, OrchestratorError

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_BACKPRESSURE = 3

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

app = typer.Typer(
    name="orchestrator",
    help="Production orchestration for LLM-agent workflows on Celery.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
simulate_app = typer.Typer(help="Built-in simulators (LLM provider, tools).", no_args_is_help=True)
breakers_app = typer.Typer(help="Circuit breakers: list, force open, force close.",
                           invoke_without_command=True)
state_app = typer.Typer(help="The agent-state memory layer.", no_args_is_help=True)
app.add_typer(state_app, name="state")
app.add_typer(db_app, name="db")
app.add_typer(breakers_app, name="breakers")
app.add_typer(simulate_app, name="simulate")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@app.command()
def up() -> None:
    """Start services (embedded unless configured), simulators and one worker per queue;
    Ctrl-C stops everything."""
    from orchestrator.cli.up import run_up

    run_up()


@app.command()
def demo(
    invocations: Annotated[int, typer.Option(min=1, max=100_000,
                                             help="support-triage invocations")] = 200,
    customers: Annotated[int, typer.Option(min=1, help="distinct customers")] = 20,
    timeout: Annotated[float, typer.Option(min=1, help="seconds to wait for all")] = 600,
) -> None:
    """Boot the whole stack, run N support-triage invocations, print a summary."""
    from orchestrator.cli.demo import run_demo

    code = run_demo(invocations=invocations, customers=customers, timeout=timeout)
    raise typer.Exit(code)


@app.command()
def worker(
    queues: Annotated[str, typer.Option("--queues", "-Q",
                                        help="comma-separated: agents, llm, tools")],
    concurrency: Annotated[int | None, typer.Option(min=1, help="pool size")] = None,
    pool: Annotated[str | None, typer.Option(help="prefork, threads, solo, gevent")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "INFO",
) -> None:
    """Run a Celery worker for the given queues with its profile's defaults."""
    from orchestrator.cli.worker import run_worker

    run_worker(queues=queues, concurrency=concurrency, pool=pool, loglevel=loglevel)


@app.command()
def flusher(
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="records per round")] = 500,
    interval: Annotated[float, typer.Option(min=0.001, help="seconds between idle rounds")] = 0.05,
    pace: Annotated[float, typer.Option(min=0.0, help="minimum seconds between rounds "
                                                      "(spares PostgreSQL)")] = 0.0,
) -> None:
    """Persist the memory layer's dirty records to PostgreSQL until stopped."""
    from orchestrator.cli.flusher import run_flusher

    run_flusher(batch=batch, interval=interval, pace=pace)


@app.command()
def submit(
    workflow: Annotated[str, typer.Argument(help="registered workflow name")],
    payload_json: Annotated[str, typer.Argument(help="payload as a JSON object")],
    wait: Annotated[bool, typer.Option("--wait", help="wait for the result")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="dedupe key")] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds to --wait")] = 300,
) -> None:
    """Submit one invocation; prints its id (or, with --wait, the invocation as JSON)."""
    import orchestrator
    from orchestrator.cli.render import invocation_json

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
    if invocation.status.value != "succeeded":
        raise typer.Exit(EXIT_FAILED)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Queue depths, workers and invocations by status."""
    from orchestrator.cli.status import show_status

    show_status(as_json=as_json)


@app.command()
def flower(
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5555,
    address: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
) -> None:
    """Run Flower against the broker, behind basic auth (ORCH_FLOWER_USER/PASSWORD)."""
    from orchestrator.cli.worker import run_flower

    run_flower(port=port, address=address)


@breakers_app.callback()
def breakers(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Each breaker's state, error rate over its window and time to the next probe."""
    if ctx.invoked_subcommand is None:
        from orchestrator.cli.breakers import show

        show(as_json=as_json)


@breakers_app.command("open")
def breakers_open(name: Annotated[str, typer.Argument(help="tool or llm-<provider>")]) -> None:
    """Force a breaker open (fallbacks answer) until it is closed again."""
    from orchestrator.cli.breakers import force

    force(name, "open")


@breakers_app.command("close")
def breakers_close(name: Annotated[str, typer.Argument(help="tool or llm-<provider>")]) -> None:
    """Force a breaker closed (calls go through; the window starts empty)."""
    from orchestrator.cli.breakers import force

    force(name, "closed")


@app.command()
def metrics(
    port: Annotated[int, typer.Option(min=1, max=65535)] = 9808,
    address: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
    once: Annotated[bool, typer.Option("--once", help="print one scrape and exit")] = False,
) -> None:
    """Serve fleet metrics for Prometheus (queue depths, breakers, LLM, state, tokens)."""
    from prometheus_client import generate_latest, start_http_server

    from orchestrator import subsystems
    from orchestrator.metrics import registry

    sub = subsystems.current()
    sub.load_workflows()
    found = registry(sub)
    if once:
        sys.stdout.write(generate_latest(found).decode())
        return
    start_http_server(port, addr=address, registry=found)
    console.print(f"metrics on http://{address}:{port}/metrics (Ctrl-C stops)")
    import time

    while True:
        time.sleep(3600)


@state_app.command("reshard")
def state_reshard(
    to: Annotated[str, typer.Option("--to", help="the new ORCH_STATE_REDIS_URLS")],
) -> None:
    """Prepare a change of memory-layer shards: flush, then drop moved keys' old copies.
    Pause state writers first; start the fleet with the new URLs afterwards."""
    import redis as redis_lib

    from config.settings import Settings
    from orchestrator import subsystems
    from orchestrator.state.reshard import reshard
    from orchestrator.state.writeback import Shard

    sub = subsystems.current()
    try:
        urls = [part.strip() for part in to.split(",") if part.strip()]
        target = Settings(state_redis_urls=urls).shard_urls  # validates the URLs
    except ValueError as exc:
        raise fail(f"--to: {exc}") from None
    new = [Shard(url, redis_lib.Redis.from_url(url)) for url in target]
    report = reshard(sub.runtime.state_shards, new, sub.state_rows, owner=sub.identity.owner())
    out.print(f"flushed {report.flushed} records; dropped {report.moved} moved copies; "
              f"{report.stayed} stay; {report.kept_dirty} kept (written during the move)")
    if report.kept_dirty:
        raise typer.Exit(EXIT_FAILED)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (Alembic) up to the newest."""
    from orchestrator import runtime
    from orchestrator.store.migrate import current, upgrade

    url = runtime.current().database_url
    upgrade(url)
    out.print(f"database at revision {current(url)}")


@simulate_app.command("llm")
def simulate_llm(
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8900,
    host: str = "127.0.0.1",
) -> None:
    """Run the OpenAI-compatible provider simulator (see scripts/sim_llm.py for all flags)."""
    from orchestrator.devstack.simulators.llm_provider import LLMSimConfig, create_app
    from orchestrator.devstack.simulators.server import serve_forever

    serve_forever(create_app(LLMSimConfig()), host, port)


@simulate_app.command("tools")
def simulate_tools(
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8901,
    host: str = "127.0.0.1",
) -> None:
    """Run the tool server simulator (see scripts/sim_tools.py for all flags)."""
    from orchestrator.devstack.simulators.server import serve_forever
    from orchestrator.devstack.simulators.tool_server import ToolSimConfig, create_app

    serve_forever(create_app(ToolSimConfig()), host, port)


def main() -> None:
    """Entry point: run the app, turning orchestrator errors into messages and exit codes."""
    try:
        app()
    except Backpressure as exc:
        console.print(f"[bold yellow]backpressure:[/] {exc}", highlight=False)
        console.print(f"retry-after: {exc.retry_after:.1f}", highlight=False)
        sys.exit(EXIT_BACKPRESSURE)
    except OrchestratorError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
