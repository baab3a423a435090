"""The LLM gateway against the provider simulator, with several worker processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

import orchestrator
from config import Settings
from orchestrator import subsystems
from orchestrator.invocation import InvocationStatus
from orchestrator.llm.keys import fingerprint
from tests.procs import Fleet, wait_for
from tests.providers import KEYS, Provider, ask


def _key_stats(stats: dict[str, object]) -> list[dict[str, int]]:
    keys = stats["keys"]
    assert isinstance(keys, dict)
    return list(keys.values())


@pytest.mark.timeout(120)
def test_demand_three_times_capacity_gives_no_429_and_no_failure(
    settings: Settings, fleet: Fleet, provider: Callable[..., Provider]
) -> None:
    sim = provider(concurrency=3, latency=0.2, jitter=0.0)
    fleet.use(settings, llm_base_url=sim.url, llm_api_keys=[SecretStr(k) for k in KEYS],
         llm_concurrency=3)
    for _ in range(3):
        fleet.start("llm", pool="threads", concurrency=6)  # 18 slots for 6 of capacity
    ids = ask(60)
    finished = [orchestrator.wait(i, timeout=90) for i in ids]
    assert all(f.status is InvocationStatus.SUCCEEDED for f in finished)
    stats = sim.stats()
    assert stats["totals"]["rate_limited_429"] == 0  # type: ignore[index]
    assert stats["totals"]["succeeded"] == 60  # type: ignore[index]
    assert all(k["max_in_flight"] <= 3 for k in _key_stats(stats))
    assert max(k["max_in_flight"] for k in _key_stats(stats)) == 3  # capacity was used
    waits = [f.steps[0].output["limiter_wait_s"] for f in finished]
    assert max(waits) > 0.2  # calls were held in line, not refused


@pytest.mark.timeout(120)
def test_rpm_is_never_exceeded_across_processes_and_excess_is_held(
    settings: Settings, fleet: Fleet, provider: Callable[..., Provider]
) -> None:
    sim = provider(rpm=10, concurrency=20, latency=0.05, jitter=0.0)
    fleet.use(settings, llm_base_url=sim.url, llm_api_keys=[SecretStr(k) for k in KEYS],
         llm_rpm=10, llm_concurrency=20)
    for _ in range(3):
        fleet.start("llm", pool="threads", concurrency=4)
    ids = ask(26)
    assert wait_for(lambda: sim.stats()["totals"]["succeeded"] == 20, timeout=60)  # type: ignore[index]
    time.sleep(2)  # the six over the window's budget stay held, not sent, not failed
    stats = sim.stats()
    assert stats["totals"]["requests"] == 20  # type: ignore[index]
    assert stats["totals"]["rate_limited_429"] == 0  # type: ignore[index]
    assert all(k["max_requests_60s"] <= 10 for k in _key_stats(stats))
    statuses = subsystems.current().store.status_of(ids)
    assert sum(s is InvocationStatus.SUCCEEDED for s in statuses.values()) == 20
    assert not any(s is InvocationStatus.FAILED for s in statuses.values())


@pytest.mark.timeout(120)
def test_tpm_is_never_exceeded_across_processes(
    settings: Settings, fleet: Fleet, provider: Callable[..., Provider]
) -> None:
    # Each call reserves its prompt estimate plus max_tokens (50): about 60 tokens.
    sim = provider(tpm=400, concurrency=20, latency=0.05, jitter=0.0, completion_tokens=50)
    fleet.use(settings, llm_base_url=sim.url, llm_api_keys=[SecretStr(k) for k in KEYS],
         llm_tpm=400, llm_concurrency=20)
    for _ in range(3):
        fleet.start("llm", pool="threads", concurrency=4)
    ask(20)
    assert wait_for(lambda: sim.stats()["totals"]["succeeded"] >= 10, timeout=60)  # type: ignore[index]
    time.sleep(2)
    stats = sim.stats()
    assert stats["totals"]["rate_limited_429"] == 0  # type: ignore[index]
    assert all(k["max_tokens_60s"] <= 400 for k in _key_stats(stats))
    assert stats["totals"]["succeeded"] < 20  # type: ignore[index]  # the rest are held


@pytest.mark.timeout(120)
def test_sigkilled_worker_frees_its_slots_when_the_lease_expires(
    settings: Settings, fleet: Fleet, provider: Callable[..., Provider]
) -> None:
    sim = provider(concurrency=2, latency=10.0, jitter=0.0)
    configured = fleet.use(settings, llm_base_url=sim.url,
                      llm_api_keys=[SecretStr(k) for k in KEYS], llm_concurrency=2,
                      llm_timeout=3.0)  # lease = timeout + 5 s = 8 s
    victim = fleet.start("llm", pool="threads", concurrency=4)
    ask(4)
    limiter = subsystems.current().llm.limiters["primary"]
    assert wait_for(lambda: sum(limiter.in_flight().values()) == 4, timeout=20)
    killed_at = time.monotonic()
    victim.kill()
    assert wait_for(lambda: sum(limiter.in_flight().values()) == 0, timeout=20, interval=0.2)
    freed_after = time.monotonic() - killed_at
    assert freed_after <= configured.llm_timeout + 5.0 + 1.0
    sim.admin("config", {"latency": 0.05})
    fleet.start("llm", pool="threads", concurrency=4)
    done = [orchestrator.wait(i, timeout=60) for i in ask(4)]
    assert all(d.status is InvocationStatus.SUCCEEDED for d in done)


@pytest.mark.timeout(120)
def test_revoked_key_leaves_rotation_and_work_continues(
    settings: Settings, fleet: Fleet, provider: Callable[..., Provider]
) -> None:
    sim = provider(concurrency=5, latency=0.05, jitter=0.0)
    sim.admin("revoke", {"key": KEYS[0]})
    fleet.use(settings, llm_base_url=sim.url, llm_api_keys=[SecretStr(k) for k in KEYS],
         llm_concurrency=5)
    for _ in range(2):
        fleet.start("llm", pool="threads", concurrency=4)
    done = [orchestrator.wait(i, timeout=60) for i in ask(20)]
    assert all(d.status is InvocationStatus.SUCCEEDED for d in done)
    limiter = subsystems.current().llm.limiters["primary"]
    assert limiter.revoked() == {fingerprint(KEYS[0])}
    stats = _key_stats(sim.stats())
    assert stats[0]["unauthorized"] <= 8  # only calls already admitted to it
    assert stats[1]["succeeded"] == 20
    logs = "".join(w.log_path.read_text() for w in fleet.workers)
    assert fingerprint(KEYS[0]) in logs and KEYS[0] not in logs  # named, never shown


@pytest.mark.timeout(120)
def test_provider_outage_switches_to_the_fallback(
    settings: Settings, fleet: Fleet, provider: Callable[..., Provider], tmp_path: Path
) -> None:
    primary = provider(outage=True, latency=0.05)
    fallback = provider(latency=0.05, jitter=0.0)
    fleet.use(settings, llm_base_url=primary.url, llm_api_keys=[SecretStr(k) for k in KEYS],
         llm_fallback_base_url=fallback.url,
         llm_fallback_api_keys=[SecretStr(k) for k in KEYS])
    fleet.start("llm", pool="threads", concurrency=4)
    done = [orchestrator.wait(i, timeout=60) for i in ask(12)]
    assert all(d.status is InvocationStatus.SUCCEEDED for d in done)
    assert {d.steps[0].output["provider"] for d in done} == {"fallback"}
    assert subsystems.current().breakers.get("llm-primary").status().state == "open"
    # The open breaker spared the primary: it saw only the calls before the trip.
    assert primary.stats()["totals"]["server_errors"] <= 8  # type: ignore[index]
