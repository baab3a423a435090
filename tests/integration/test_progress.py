"""The progress guarantee, tried as users meet it: every accepted invocation ends
succeeded, failed or cancelled; no step runs twice; nothing sits queued for ever.

Each test injects its fault for real (a tool that keeps failing, a provider outage, a
TCP proxy cut in front of PostgreSQL, a step that kills its own worker process) against
real workers, Redis and PostgreSQL, with the default retry budget.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis
from pydantic import SecretStr

import orchestrator
from config import Settings
from config.settings import SIMULATED_LLM_KEYS
from orchestrator import subsystems
from orchestrator.devstack.simulators.llm_provider import LLMSimConfig, create_app
from orchestrator.devstack.simulators.server import ServerHandle, start_server
from orchestrator.execution.dispatch import dispatch
from orchestrator.invocation import InvocationStatus
from orchestrator.workflow import registry
from tests.faults import tcp_proxy
from tests.procs import Fleet, wait_for


def _client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url or "", decode_responses=True)


def _runs(settings: Settings, tag: str) -> dict[str, int]:
    return {k: int(v) for k, v in _client(settings).hgetall(f"test:probe:{tag}").items()}


def test_the_retry_budget_is_the_default_users_get(settings: Settings) -> None:
    assert settings.step_max_retries == Settings().step_max_retries == 5


@pytest.mark.timeout(120)
def test_tool_failing_past_every_retry_ends_succeeded_with_its_fallback(
    settings: Settings, fleet: Fleet
) -> None:
    fleet.start("tools", pool="threads", concurrency=4)
    ids = [orchestrator.submit("test-broken-tool", {"q": q}) for q in range(3)]
    done = [orchestrator.wait(i, timeout=90) for i in ids]
    assert [d.status for d in done] == [InvocationStatus.SUCCEEDED] * 3
    for invocation in done:
        step = invocation.steps[0]
        assert step.fallback is True
        assert step.output == {"answer": None, "degraded": True}
        assert step.attempts == settings.step_max_retries + 1
    calls = _client(settings).hgetall("test:broken-calls")
    assert {int(v) for v in calls.values()} == {settings.step_max_retries + 1}


@pytest.fixture
def provider() -> Iterator[ServerHandle]:
    handle = start_server(create_app(LLMSimConfig(keys=SIMULATED_LLM_KEYS, latency=0.02,
                                                  jitter=0.0, outage=True)))
    yield handle
    handle.stop()


@pytest.mark.timeout(180)
def test_llm_steps_hold_through_a_45s_provider_outage_and_all_succeed(
    settings: Settings, fleet: Fleet, provider: ServerHandle
) -> None:
    fleet.use(settings, llm_base_url=f"{provider.url}/v1",
         llm_api_keys=[SecretStr(k) for k in SIMULATED_LLM_KEYS])
    fleet.start("llm", pool="threads", concurrency=4)
    ids = [orchestrator.submit("llm-ask", {"question": f"q{i}"}) for i in range(6)]
    time.sleep(45)  # the provider answers 503 to every call meanwhile
    assert not any(orchestrator.get(i).finished for i in ids), "nothing may fail meanwhile"
    httpx.post(f"{provider.url}/admin/config", json={"outage": False}).raise_for_status()
    done = [orchestrator.wait(i, timeout=90) for i in ids]
    assert [d.status for d in done] == [InvocationStatus.SUCCEEDED] * 6
    assert httpx.get(f"{provider.url}/stats").json()["totals"]["server_errors"] > 0


def _proxied(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2
                                     else host))


@pytest.mark.timeout(150)
def test_postgresql_unreachable_for_6s_during_last_steps_loses_nothing(
    settings: Settings, fleet: Fleet
) -> None:
    tag = uuid.uuid4().hex[:8]
    port = urlsplit(settings.database_url or "").port or 5432
    with tcp_proxy(port) as proxy:
        # Workers reach PostgreSQL through the proxy; this process (the test's checks)
        # directly.
        fleet.env["ORCH_DATABASE_URL"] = _proxied(settings.database_url or "", proxy.port)
        fleet.start("agents", concurrency=2)
        payload = {"tag": tag, "last": "sleep", "seconds": 1.0}
        ids = [orchestrator.submit("test-probe", payload) for _ in range(8)]
        assert wait_for(lambda: len(_runs(settings, tag)) >= 2, timeout=30)
        proxy.down()
        time.sleep(6)
        proxy.up()
        done = [orchestrator.wait(i, timeout=120) for i in ids]
    assert proxy.cut > 0, "the outage came too late to cut anything"
    assert [d.status for d in done] == [InvocationStatus.SUCCEEDED] * 8
    runs = _runs(settings, tag)
    assert set(runs.values()) == {1}, runs  # no step ran twice
    assert len(runs) == 16


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"first": "datetime"}, "step first returned output that is not plain JSON"),
        ({"last": "nul"}, "NUL character"),
    ],
)
def test_output_postgresql_cannot_store_fails_its_invocation_within_a_minute(
    settings: Settings, fleet: Fleet, payload: dict[str, str], fragment: str
) -> None:
    fleet.start("agents", concurrency=1)
    started = time.monotonic()
    invocation = orchestrator.wait(
        orchestrator.submit("test-probe", {"tag": uuid.uuid4().hex[:8], **payload}),
        timeout=60)
    assert time.monotonic() - started < 60
    assert invocation.status is InvocationStatus.FAILED
    assert invocation.error is not None and fragment in invocation.error


@pytest.mark.timeout(90)
def test_backpressure_inside_a_step_is_retried(settings: Settings, fleet: Fleet) -> None:
    fleet.start("agents", concurrency=1)
    invocation = orchestrator.wait(orchestrator.submit(
        "test-probe", {"tag": uuid.uuid4().hex[:8], "first": "backpressure", "times": 2}),
        timeout=60)
    assert invocation.status is InvocationStatus.SUCCEEDED
    assert invocation.steps[0].attempts == 3


@pytest.mark.timeout(90)
def test_step_longer_than_its_lease_redelivered_while_running_runs_once(
    settings: Settings, fleet: Fleet
) -> None:
    configured = fleet.use(settings, step_lease_seconds=2)
    fleet.start("agents", concurrency=2)
    tag = uuid.uuid4().hex[:8]
    payload = {"tag": tag, "first": "sleep", "seconds": 7.0}
    invocation_id = orchestrator.submit("test-probe", payload)
    assert wait_for(lambda: bool(subsystems.current().claims.snapshot(invocation_id)[2]),
                    timeout=20)
    # What a visibility timeout or a broker reconnect does: the same step delivered
    # again while it runs, well past its 2 s lease.
    time.sleep(3)
    context = {"invocation_id": invocation_id, "workflow": "test-probe",
               "payload": payload, "outputs": {}}
    dispatch(subsystems.current().runtime.producer, registry.get("test-probe"), context)
    invocation = orchestrator.wait(invocation_id, timeout=60)
    assert invocation.status is InvocationStatus.SUCCEEDED
    assert configured.step_lease_seconds < payload["seconds"]  # type: ignore[operator]
    assert _runs(settings, tag) == {f"{invocation_id}:first": 1, f"{invocation_id}:last": 1}


@pytest.mark.timeout(120)
def test_step_that_kills_its_worker_fails_after_max_deliveries(
    settings: Settings, fleet: Fleet
) -> None:
    fleet.start("agents", concurrency=1)
    invocation = orchestrator.wait(orchestrator.submit(
        "test-probe", {"tag": uuid.uuid4().hex[:8], "first": "suicide"}), timeout=100)
    assert invocation.status is InvocationStatus.FAILED
    expected = f"worker died {settings.step_max_deliveries} times running step first"
    assert invocation.error is not None and expected in invocation.error


@pytest.mark.timeout(90)
def test_reconciler_finishes_an_invocation_whose_message_was_deleted(
    settings: Settings, fleet: Fleet
) -> None:
    fleet.use(settings, stall_seconds=2)
    invocation_id = orchestrator.submit("test-probe", {"tag": uuid.uuid4().hex[:8]})
    client = _client(settings)
    assert client.llen("agents") == 1
    client.delete("agents")  # the message is gone: nothing would ever deliver it
    fleet.start("agents", concurrency=1)
    time.sleep(3)
    assert orchestrator.get(invocation_id).status is InvocationStatus.QUEUED
    # (Invocations other tests left unfinished in this database are reconciled too.)
    report = subsystems.current().reconciler().reconcile_once()
    assert invocation_id in report.redispatched
    invocation = orchestrator.wait(invocation_id, timeout=60)
    assert invocation.status is InvocationStatus.SUCCEEDED


@pytest.mark.timeout(60)
def test_reconciler_fails_an_invocation_after_its_redispatches(
    settings: Settings, fleet: Fleet
) -> None:
    fleet.use(settings, stall_seconds=1, reconcile_max_redispatches=1)
    invocation_id = orchestrator.submit("test-probe", {"tag": uuid.uuid4().hex[:8]})
    client = _client(settings)
    reconciler = subsystems.current().reconciler()
    for expected in ("redispatched", "failed"):
        client.delete("agents")  # no worker, and the message gone each time
        time.sleep(1.5)
        report = reconciler.reconcile_once()
        assert invocation_id in getattr(report, expected)
    invocation = orchestrator.get(invocation_id)
    assert invocation.status is InvocationStatus.FAILED
    assert invocation.error is not None and "after 1 re-dispatches" in invocation.error


@pytest.mark.timeout(60)
def test_first_step_start_marks_the_invocation_running(
    settings: Settings, fleet: Fleet
) -> None:
    fleet.start("agents", concurrency=1)
    invocation_id = orchestrator.submit(
        "test-probe", {"tag": uuid.uuid4().hex[:8], "first": "sleep", "seconds": 4.0})
    store = subsystems.current().store
    assert wait_for(lambda: store.status(invocation_id) is InvocationStatus.RUNNING,
                    timeout=20)
    assert orchestrator.wait(invocation_id, timeout=40).status is InvocationStatus.SUCCEEDED


@pytest.mark.timeout(60)
def test_python_step_past_its_time_limit_fails_with_the_reason(
    settings: Settings, fleet: Fleet
) -> None:
    fleet.use(settings, step_time_limit=1)
    fleet.start("agents", concurrency=1)
    invocation = orchestrator.wait(orchestrator.submit(
        "test-probe", {"tag": uuid.uuid4().hex[:8], "first": "sleep", "seconds": 5.0}),
        timeout=40)
    assert invocation.status is InvocationStatus.FAILED
    assert invocation.error == "step first ran past its time limit of 1s (ORCH_STEP_TIME_LIMIT)"


def test_reconciler_deletes_invocations_finished_past_the_retention(
    settings: Settings,
) -> None:
    orchestrator.configure(settings.model_copy(update={"retention_days": 30}))
    sub = subsystems.current()
    old, recent, unfinished = (orchestrator.submit("test-probe", {"tag": f"r{i}"})
                               for i in range(3))
    for invocation_id in (old, recent):
        orchestrator.cancel(invocation_id)
    with sub.runtime.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE invocations SET finished_at = now() - interval '31 days', "
            "created_at = now() - interval '31 days' WHERE id = %s", (old,))
        conn.exec_driver_sql(
            "UPDATE invocations SET created_at = now() - interval '40 days' WHERE id = %s",
            (unfinished,))
    assert sub.reconciler().expire() >= 1
    assert sub.store.get(old) is None
    assert sub.store.get(recent) is not None
    assert sub.store.get(unfinished) is not None  # never deleted before it ends
