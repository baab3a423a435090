"""A whole fleet on this machine: services, migrations, simulators and one worker per
profile. ``orchestrator up`` and ``orchestrator demo`` are built on it."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pydantic import SecretStr

from config import Settings
from config.celery import QUEUES
from config.settings import SIMULATED_LLM_KEYS, SIMULATED_LLM_URL, SIMULATED_TOOLS_URL
from orchestrator import runtime
from orchestrator.devstack.netns import Host
from orchestrator.devstack.processes import FlusherProcess, ReconcilerProcess, WorkerProcess
from orchestrator.devstack.supervisor import Supervisor
from orchestrator.store.migrate import upgrade

Progress = Callable[[str], None]


@dataclass
class LocalFleet:
    """What is running: the resolved settings, simulator URLs, worker processes."""

    settings: Settings
    workers: list[WorkerProcess] = field(default_factory=list)
    simulated_llm: str | None = None
    simulated_tools: str | None = None
    embedded: list[str] = field(default_factory=list)
    flusher: FlusherProcess | None = None
    reconciler: ReconcilerProcess | None = None
    supervisor: Supervisor | None = None


def _port_free(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((parts.hostname or "127.0.0.1", parts.port or 0))
        except OSError:
            return False
    return True


@contextmanager
def _simulators(settings: Settings, say: Progress) -> Iterator[tuple[str | None, str | None]]:
    # Imported only for a simulator that starts: they need the demo extra.
    with ExitStack() as stack:
        llm_url = tools_url = None
        if settings.llm_base_url is None:
            from orchestrator.devstack.simulators.llm_provider import LLMSimConfig
            from orchestrator.devstack.simulators.llm_provider import create_app as llm_app
            from orchestrator.devstack.simulators.server import start_server

            port = urlsplit(SIMULATED_LLM_URL).port if _port_free(SIMULATED_LLM_URL) else 0
            handle = start_server(llm_app(LLMSimConfig()), port=port or 0)
            stack.callback(handle.stop)
            llm_url = f"{handle.url}/v1"
            say(f"LLM provider simulator at {llm_url}")
        if settings.tools_url is None:
            from orchestrator.devstack.simulators.server import start_server
            from orchestrator.devstack.simulators.tool_server import ToolSimConfig
            from orchestrator.devstack.simulators.tool_server import create_app as tools_app

            port = urlsplit(SIMULATED_TOOLS_URL).port if _port_free(SIMULATED_TOOLS_URL) else 0
            handle = start_server(tools_app(ToolSimConfig()), port=port or 0)
            stack.callback(handle.stop)
            tools_url = handle.url
            say(f"tool simulator at {tools_url}")
        yield llm_url, tools_url


@contextmanager
def local_fleet(
    settings: Settings, *, say: Progress = lambda _m: None, start_workers: bool = True,
    simulators: bool = True, hosts: Sequence[Host] = (),
) -> Iterator[LocalFleet]:
    """Start everything ``settings`` does not point at elsewhere; stop it all on exit.

    ``hosts``: each of these simulated hosts (:mod:`orchestrator.devstack.netns`) runs a
    worker per queue, instead of one worker per queue on this host; the flusher and the
    reconciler stay here. ``settings`` must then name services the hosts can reach.
    """
    with ExitStack() as stack:
        if settings.redis_url and settings.database_url:
            resolved = settings
        else:
            from orchestrator.devstack.servers.stack import service_stack

            resolved = stack.enter_context(service_stack(settings))
        embedded = []
        if settings.redis_url is None:
            embedded.append(f"Redis (embedded) at {resolved.redis_url}")
        if settings.database_url is None:
            embedded.append(f"PostgreSQL (embedded) at {resolved.database_url}")
        for line in embedded:
            say(line)
        assert resolved.database_url
        upgrade(resolved.database_url)
        say("database schema up to date")
        llm_url, tools_url = (stack.enter_context(_simulators(resolved, say)) if simulators
                              else (None, None))
        updates: dict[str, object] = {}
        if llm_url:
            updates["llm_base_url"] = llm_url
            updates["llm_api_keys"] = [SecretStr(k) for k in SIMULATED_LLM_KEYS]
        if tools_url:
            updates["tools_url"] = tools_url
        resolved = resolved.model_copy(update=updates)
        runtime.configure(resolved)
        stack.callback(lambda: runtime.current().close())
        fleet = LocalFleet(resolved, simulated_llm=llm_url, simulated_tools=tools_url,
                           embedded=embedded)
        if start_workers:
            log_dir = resolved.data_dir / "logs"
            flusher = FlusherProcess(resolved.environment(), log_dir=log_dir)
            stack.callback(flusher.stop)
            flusher.start()
            fleet.flusher = flusher
            say(f"state flusher, log {flusher.log_path}")
            reconciler = ReconcilerProcess(resolved.environment(), log_dir=log_dir)
            stack.callback(reconciler.stop)
            reconciler.start()
            fleet.reconciler = reconciler
            say(f"reconciler, log {reconciler.log_path}")
            places: list[Host | None] = [*hosts] or [None]
            for host, queue in itertools.product(places, QUEUES):
                # One worker per queue (and host), with that queue's profile
                # (``python -m workers``).
                worker = WorkerProcess(resolved.environment(), queue, log_dir=log_dir,
                                       name=queue, host=host)
                stack.callback(worker.stop)
                worker.start()
                fleet.workers.append(worker)
                where = f" on {host.hostname} ({host.address})" if host else ""
                say(f"worker {queue}{where}: its queue's profile, log {worker.log_path}")
        if fleet.workers:
            # A worker that exits on its own (a stalled consumer, a crash) is started
            # again, as compose's `restart:` does; stopped first at exit (LIFO).
            fleet.supervisor = Supervisor(fleet.workers, say=say).start()
            stack.callback(fleet.supervisor.stop)
        yield fleet
