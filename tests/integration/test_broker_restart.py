"""A broker restart under load loses nothing: workers take messages again afterwards, and
every invocation in flight or arriving ends ``succeeded``.

Each test runs its own ``redis-server`` (appendonly, a port of its own, so it can run in
parallel under xdist) as the broker and state store, and restarts it for real on the same
port and data directory while invocations are in flight and still arriving.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

import orchestrator
from config import Settings
from orchestrator import runtime
from orchestrator.devstack.servers.redis_server import EmbeddedRedis
from orchestrator.devstack.supervisor import Supervisor
from orchestrator.errors import ServiceError
from orchestrator.invocation import InvocationStatus
from tests.procs import Fleet, wait_for
from tests.providers import KEYS, Provider

pytestmark = [pytest.mark.slow, pytest.mark.isolated]

ARRIVALS = 48  # invocations submitted over ARRIVAL_SECONDS, the restart in the middle
ARRIVAL_SECONDS = 12.0
RESTART_AT = 5.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own (appendonly), restartable on the same port."""
    server = EmbeddedRedis(tmp_path / "broker", appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sim(provider: Callable[..., Provider]) -> Provider:
    """The provider simulator, answering in about a second: at the restart, several LLM
    steps are running (their messages unacked) while the worker waits for more in
    ``BRPOP``, which is what the kombu bug needs (see workers/transport.py)."""
    return provider(latency=1.0, jitter=0.2)


@pytest.fixture
def settings(database_url: str, broker: EmbeddedRedis, sim: Provider,
             tmp_path: Path) -> Iterator[Settings]:
    """The shared test settings, but on this test's own broker (no shared Redis db)."""
    configured = Settings(
        redis_url=broker.url,
        database_url=database_url,
        llm_base_url=sim.url,
        llm_api_keys=[SecretStr(k) for k in KEYS],
        tools_url="http://127.0.0.1:9",
        data_dir=tmp_path / "data",
        workflow_modules=["orchestrator.agents", "tests.workloads", "tests.workflows"],
        visibility_timeout=20,
        step_lease_seconds=8,
    )
    orchestrator.configure(configured)
    yield configured
    runtime.current().close()


class Arrivals(threading.Thread):
    """Submits invocations of ``workflow`` at a steady pace; a submit the broker refuses
    (restarting) is tried again with the same idempotency key, as a producer would."""

    def __init__(self, workflow: str, payload: Callable[[int], dict[str, object]],
                 count: int, seconds: float) -> None:
        super().__init__(name="arrivals", daemon=True)
        self.workflow = workflow
        self.payload = payload
        self.count = count
        self.gap = seconds / count
        self.run_id = uuid.uuid4().hex[:8]  # keys unique to this run: the database is shared
        self.ids: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        for n in range(self.count):
            deadline = time.monotonic() + 30
            while True:
                try:
                    self.ids.append(orchestrator.submit(
                        self.workflow, self.payload(n),
                        idempotency_key=f"restart-{self.run_id}-{n}"))
                    break
                except ServiceError as exc:
                    if time.monotonic() > deadline:
                        self.errors.append(str(exc))
                        break
                    time.sleep(0.2)
            time.sleep(self.gap)


def _restart_mid_stream(broker: EmbeddedRedis, workflow: str,
                        payload: Callable[[int], dict[str, object]]) -> list[str]:
    """Submit ARRIVALS invocations over ARRIVAL_SECONDS; SIGKILL the broker RESTART_AT
    seconds in, with steps running and messages unacked, and start it again on the same
    port and data directory (its AOF) a second later. Returns the invocation ids."""
    arrivals = Arrivals(workflow, payload, ARRIVALS, ARRIVAL_SECONDS)
    arrivals.start()
    assert wait_for(lambda: len(arrivals.ids) >= 5, timeout=20)
    time.sleep(max(0.0, RESTART_AT - 5 * arrivals.gap))
    broker.kill()
    time.sleep(1.0)
    broker.start()
    arrivals.join(timeout=90)
    assert not arrivals.errors
    assert len(arrivals.ids) == ARRIVALS
    return arrivals.ids


def _all_succeed_within(ids: list[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    done = [orchestrator.wait(i, timeout=max(0.1, deadline - time.monotonic())) for i in ids]
    assert [d.status for d in done] == [InvocationStatus.SUCCEEDED] * len(ids)


@pytest.mark.timeout(180)
def test_llm_thread_worker_consumes_again_after_a_broker_restart_and_loses_nothing(
    settings: Settings, fleet: Fleet, broker: EmbeddedRedis
) -> None:
    llm = fleet.start("llm")  # the profile users get: threads, ORCH_LLM_WORKER_CONCURRENCY
    ids = _restart_mid_stream(broker, "llm-ask", lambda n: {"question": f"question {n}"})
    # Bounded: the visibility timeout (20 s here) brings back what was unacked at the
    # restart; the rest flows at once.
    _all_succeed_within(ids, 60)
    assert llm.alive, "the worker reconnected: it did not have to be restarted"
    # Remote control (queue pause/drain, `fleet status`, Flower) reaches it again too.
    assert wait_for(lambda: _answers_control(), timeout=20)


def _answers_control() -> bool:
    replies = runtime.current().producer.control.inspect(timeout=2).ping() or {}
    return bool(replies)


@pytest.mark.timeout(180)
def test_agents_prefork_worker_consumes_again_after_a_broker_restart_and_loses_nothing(
    settings: Settings, fleet: Fleet, broker: EmbeddedRedis
) -> None:
    agents = fleet.start("agents")  # prefork, ORCH_AGENTS_CONCURRENCY
    ids = _restart_mid_stream(broker, "test-slow",
                              lambda n: {"tag": f"restart-{n}", "seconds": 0.05})
    _all_succeed_within(ids, 60)
    assert agents.alive


@pytest.mark.timeout(180)
def test_worker_not_consuming_past_the_stall_limit_exits_and_its_restart_loses_nothing(
    settings: Settings, fleet: Fleet, broker: EmbeddedRedis
) -> None:
    fleet.use(settings, worker_stall_exit_seconds=3)
    llm = fleet.start("llm")
    supervisor = Supervisor(fleet.workers).start()  # what `orchestrator up` runs
    try:
        arrivals = Arrivals("llm-ask", lambda n: {"question": f"question {n}"}, 20, 4.0)
        arrivals.start()
        assert wait_for(lambda: len(arrivals.ids) >= 5, timeout=20)
        broker.kill()  # away for longer than the stall limit
        assert wait_for(lambda: bool(supervisor.exits.get(llm.name)), timeout=30)
        broker.start()
        arrivals.join(timeout=60)
        assert not arrivals.errors
        _all_succeed_within(arrivals.ids, 90)
    finally:
        supervisor.stop()
    assert supervisor.exits[llm.name][0] == 1
    assert "worker stalled: not consuming from the broker" in llm.log_path.read_text()
