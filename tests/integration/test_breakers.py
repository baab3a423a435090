"""Fleet-wide circuit breakers with real worker processes and Redis."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from concurrent.futures import ProcessPoolExecutor

import pybreaker
import pytest
import redis
from typer.testing import CliRunner

import orchestrator
from config import Settings
from orchestrator import subsystems, telemetry
from orchestrator.breakers import BreakerPolicy, FleetBreaker, recent_events
from orchestrator.cli.app import app
from orchestrator.invocation import InvocationStatus
from tests.breaker_workers import race_for_probe
from tests.procs import Fleet, wait_for
from tests.workflows import TOOL_MODE_KEY

POLICY = BreakerPolicy(window=10, min_calls=4, threshold=0.5, reset_timeout=1.0,
                       probe_timeout=5.0)


def _client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url or "")


@pytest.mark.timeout(120)
def test_hanging_tool_trips_breaker_then_fallback_answers_fast_everywhere(
    settings: Settings, fleet: Fleet
) -> None:
    client = _client(settings)
    client.set(TOOL_MODE_KEY, "hang")
    for _ in range(3):
        fleet.start("tools", pool="threads", concurrency=4)
    first = [orchestrator.submit("test-tool", {"q": i}) for i in range(6)]
    done = [orchestrator.wait(i, timeout=60) for i in first]
    assert all(d.status is InvocationStatus.SUCCEEDED for d in done)  # degraded, not failed
    breaker = subsystems.current().breakers.get("test_flaky")
    assert breaker.status().state == "open"
    hung = int(client.hget("test:tool-calls", "hang") or 0)
    assert 4 <= hung <= 4 + 12  # tripped after the window's minimum, not after every retry

    # Open in this process too, though a worker process opened it: state is fleet-wide.
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker.call(lambda: None, is_failure=lambda exc: True)

    later = [orchestrator.wait(orchestrator.submit("test-tool", {"q": i}), timeout=30)
             for i in range(10)]
    steps = [inv.steps[0] for inv in later]
    assert all(s.fallback for s in steps)
    assert all(s.output == {"answer": None, "degraded": True} for s in steps)
    assert max(s.duration or 0 for s in steps) < 0.05
    assert int(client.hget("test:tool-calls", "hang") or 0) == hung  # the tool was spared


@pytest.mark.timeout(60)
def test_exactly_one_probe_across_three_processes_and_recovery_closes(
    settings: Settings,
) -> None:
    name = f"probe-test-{uuid.uuid4().hex[:6]}"
    client = _client(settings)
    breaker = FleetBreaker(client, name, POLICY, owner=lambda: "test")
    for _ in range(4):
        with pytest.raises(RuntimeError):
            breaker.call(lambda: (_ for _ in ()).throw(RuntimeError("down")),
                         is_failure=lambda exc: True)
    assert breaker.status().state == "open"
    time.sleep(POLICY.reset_timeout + 0.2)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(3, mp_context=context) as pool:
        racers = [pool.submit(race_for_probe, settings.redis_url or "", name, 8) for _ in range(3)]
        assert wait_for(lambda: int(client.get(f"test:ready:{name}") or 0) == 3, timeout=40)
        client.set(f"test:go:{name}", 1)
        results = [racer.result(timeout=30) for racer in racers]
    assert sum(ran for ran, _ in results) == 1
    assert sum(refused for _, refused in results) == 3 * 8 - 1
    assert int(client.get(f"test:probes:{name}") or 0) == 1
    assert breaker.status().state == "closed"  # the probe succeeded
    assert breaker.call(lambda: "through", is_failure=lambda exc: True) == "through"


def test_failed_probe_reopens(settings: Settings) -> None:
    breaker = FleetBreaker(_client(settings), f"reopen-{uuid.uuid4().hex[:6]}", POLICY,
                           owner=lambda: "test")
    breaker.force("open")
    breaker.force("closed")
    for _ in range(4):
        with pytest.raises(TimeoutError):
            breaker.call(lambda: (_ for _ in ()).throw(TimeoutError()), is_failure=lambda e: True)
    time.sleep(POLICY.reset_timeout + 0.1)
    with pytest.raises(TimeoutError):
        breaker.call(lambda: (_ for _ in ()).throw(TimeoutError()), is_failure=lambda e: True)
    status = breaker.status()
    assert status.state == "open"
    assert status.next_probe_in is not None and status.next_probe_in > 0.5


@pytest.mark.timeout(60)
def test_operator_forces_open_and_close_from_the_cli(settings: Settings, fleet: Fleet) -> None:
    client = _client(settings)
    client.set(TOOL_MODE_KEY, "ok")
    fleet.start("tools", pool="threads", concurrency=2)
    runner = CliRunner()
    env = settings.environment()
    result = runner.invoke(app, ["breakers", "open", "test_flaky"], env=env)
    assert result.exit_code == 0, result.output
    forced = orchestrator.wait(orchestrator.submit("test-tool", {"q": 2}), timeout=30)
    assert forced.steps[0].fallback
    listing = runner.invoke(app, ["breakers", "--json"], env=env)
    assert '"state": "open"' in listing.output and '"forced": true' in listing.output
    assert runner.invoke(app, ["breakers", "close", "test_flaky"], env=env).exit_code == 0
    assert wait_for(lambda: subsystems.current().breakers.get("test_flaky").status().state
                    == "closed", timeout=5)
    normal = orchestrator.wait(orchestrator.submit("test-tool", {"q": 2}), timeout=30)
    assert not normal.steps[0].fallback and normal.output == {"answer": 4}
    unknown = runner.invoke(app, ["breakers", "open", "no_such_tool"], env=env)
    assert unknown.exit_code != 0


def test_forcing_the_state_a_breaker_already_has_records_no_transition(
    settings: Settings,
) -> None:
    client = _client(settings)
    name = f"same-{uuid.uuid4().hex[:6]}"
    breaker = FleetBreaker(client, name, POLICY, owner=lambda: "test")

    def transitions() -> tuple[list[str], dict[str, int]]:
        mine = {k: v for k, v in telemetry.counters(client).items() if f":{name}:" in k}
        return [e for e in recent_events(client) if f"|{name}|" in e], mine

    breaker.force("closed")  # closed already
    assert transitions() == ([], {})
    breaker.force("open")
    events, counts = transitions()
    assert len(events) == 1 and "|closed|open|" in events[0]
    assert counts == {f"breaker_transitions:{name}:open": 1}
    breaker.force("open")  # open already: still one transition
    assert transitions() == (events, counts)
