"""API keys the provider refuses, against the provider simulator and worker processes:
out of rotation for a cool-off, back through exactly one probe, the fallback answering
meanwhile, a step that holds and then fails naming the keys, and ``orchestrator keys``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

import orchestrator
from config import Settings
from orchestrator import subsystems
from orchestrator.cli.app import app
from orchestrator.invocation import InvocationStatus
from orchestrator.llm.keys import fingerprint
from tests.procs import Fleet, wait_for
from tests.providers import KEYS, Provider, ask

FINGERPRINTS = tuple(fingerprint(k) for k in KEYS)





class Load:
    """Submits an ``llm-ask`` every ``every`` seconds until stopped; keeps the ids."""

    def __init__(self, every: float = 0.1) -> None:
        self.every = every
        self.ids: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            self.ids.append(orchestrator.submit("llm-ask", {"question": f"load {n}"}))
            n += 1
            self._stop.wait(self.every)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _logs(fleet: Fleet) -> str:
    return "".join(w.log_path.read_text() for w in fleet.workers)


@pytest.mark.timeout(180)
def test_refused_key_comes_back_after_its_cooloff_through_exactly_one_probe(
    settings: Settings, fleet: Fleet, provider: Callable[..., Provider]
) -> None:
    sim = provider(concurrency=10, latency=0.05, jitter=0.0)
    sim.refuse(KEYS[0])
    fleet.use(settings, llm_base_url=sim.url, llm_api_keys=[SecretStr(k) for k in KEYS],
         llm_concurrency=3, llm_key_cooloff=3.0)
    for _ in range(2):
        fleet.start("llm", pool="threads", concurrency=4)
    done = [orchestrator.wait(i, timeout=60) for i in ask(8)]
    assert all(d.status is InvocationStatus.SUCCEEDED for d in done)
    limiter = subsystems.current().llm.limiters["primary"]
    [first] = limiter.out_of_rotation().values()
    assert limiter.revoked() == {FINGERPRINTS[0]} and first.strikes == 1
    refused_before = sim.key_stats(0)["unauthorized"]

    with Load() as load:
        # Steady load from two processes over the end of the cool-off: one call probes,
        # is refused, and the key goes back for twice as long (6 s).
        assert wait_for(lambda: limiter.out_of_rotation()[FINGERPRINTS[0]].strikes == 2,
                        timeout=20)
        time.sleep(2.0)
        assert sim.key_stats(0)["unauthorized"] == refused_before + 1
        second = limiter.out_of_rotation()[FINGERPRINTS[0]]
        assert second.probe_at_ms - second.last_ms == 6000
        sim.refuse(KEYS[0], refused=False)  # the provider takes the key again
        assert wait_for(lambda: limiter.revoked() == set(), timeout=20)
        answered_before = sim.key_stats(0)["succeeded"]
        time.sleep(1.5)
    assert sim.key_stats(0)["unauthorized"] == refused_before + 1  # no other probe
    assert sim.key_stats(0)["succeeded"] > answered_before  # back in rotation
    finished = [orchestrator.wait(i, timeout=60) for i in load.ids]
    assert all(f.status is InvocationStatus.SUCCEEDED for f in finished)
    logs = _logs(fleet)
    assert f"LLM key {FINGERPRINTS[0]} of primary answered its probe: back in rotation" in logs
    assert KEYS[0] not in logs


@pytest.mark.timeout(120)
def test_every_primary_key_refused_the_fallback_answers(
    settings: Settings, fleet: Fleet, provider: Callable[..., Provider]
) -> None:
    primary = provider(latency=0.05, jitter=0.0)
    fallback = provider(latency=0.05, jitter=0.0)
    for key in KEYS:
        primary.refuse(key)
    fleet.use(settings, llm_base_url=primary.url, llm_api_keys=[SecretStr(k) for k in KEYS],
         llm_fallback_base_url=fallback.url,
         llm_fallback_api_keys=[SecretStr(k) for k in KEYS])
    fleet.start("llm", pool="threads", concurrency=4)
    done = [orchestrator.wait(i, timeout=60) for i in ask(12)]
    assert [d.status for d in done] == [InvocationStatus.SUCCEEDED] * 12
    assert {d.steps[0].output["provider"] for d in done} == {"fallback"}
    assert subsystems.current().llm.limiters["primary"].revoked() == set(FINGERPRINTS)
    # Out of rotation, the primary's keys were not tried again once refused.
    refused = sum(primary.key_stats(i)["unauthorized"] for i in range(2))
    assert 2 <= refused <= 2 + 4  # each key once, and calls already admitted to it


@pytest.mark.timeout(120)
def test_no_usable_key_and_no_fallback_fails_after_the_hold_naming_the_keys(
    settings: Settings, fleet: Fleet, provider: Callable[..., Provider]
) -> None:
    sim = provider(latency=0.05, jitter=0.0)
    for key in KEYS:
        sim.refuse(key)
    fleet.use(settings, llm_base_url=sim.url, llm_api_keys=[SecretStr(k) for k in KEYS],
         llm_outage_hold=4.0, llm_key_cooloff=1.0)
    fleet.start("llm", pool="threads", concurrency=4)
    [failed] = [orchestrator.wait(i, timeout=60) for i in ask(1)]
    assert failed.status is InvocationStatus.FAILED
    assert failed.finished_at is not None
    assert (failed.finished_at - failed.created_at).total_seconds() >= 4.0  # held first
    assert failed.steps[0].attempts == 1  # holding spent no retries
    error = failed.error or ""
    assert "no usable API key" in error and "ORCH_LLM_OUTAGE_HOLD" in error
    for key_id in FINGERPRINTS:
        assert f"{key_id} refused with HTTP 401 at " in error
    logs = _logs(fleet)
    assert FINGERPRINTS[0] in logs
    assert not any(key in logs or key in error for key in KEYS)


@pytest.mark.timeout(120)
def test_keys_lists_fingerprints_and_restore_returns_a_key(
    settings: Settings, fleet: Fleet, provider: Callable[..., Provider]
) -> None:
    sim = provider(latency=0.01, jitter=0.0)
    sim.refuse(KEYS[1])
    configured = fleet.use(settings, llm_base_url=sim.url,
                      llm_api_keys=[SecretStr(k) for k in KEYS], llm_concurrency=1)
    gateway = subsystems.current().llm
    for _ in range(3):  # the refused key is met on one of them, the other answers
        gateway.complete([{"role": "user", "content": "hi"}], max_tokens=8)
    runner, env = CliRunner(), configured.environment()

    listing = runner.invoke(app, ["keys", "--json"], env=env)
    assert listing.exit_code == 0, listing.output
    found = {(k["provider"], k["key"]): k for k in json.loads(listing.output)}
    assert set(found) == {("primary", fp) for fp in FINGERPRINTS}
    out = found[("primary", FINGERPRINTS[1])]
    assert out["state"] == "out" and out["refused"]["status"] == 401
    assert 250 < out["next_probe_in_s"] <= 300
    usable = found[("primary", FINGERPRINTS[0])]
    assert usable["state"] == "usable" and usable["requests_left"] < configured.llm_rpm

    table = runner.invoke(app, ["keys"], env={**env, "COLUMNS": "200"})
    assert table.exit_code == 0 and FINGERPRINTS[1] in table.output
    assert "HTTP 401" in table.output

    restored = runner.invoke(app, ["keys", "restore", FINGERPRINTS[1]], env=env)
    assert restored.exit_code == 0, restored.output
    assert f"key {FINGERPRINTS[1]}: back in rotation (primary)" in restored.output
    assert gateway.limiters["primary"].revoked() == set()
    again = runner.invoke(app, ["keys", "restore", FINGERPRINTS[1]], env=env)
    assert again.exit_code == 0 and "already in rotation" in again.output

    unknown = runner.invoke(app, ["keys", "restore", "k-0000000000"], env=env)
    assert unknown.exit_code == 2
    assert "no API key has fingerprint 'k-0000000000'" in unknown.output
    shown = listing.output + table.output + restored.output + unknown.output
    assert not any(key in shown for key in KEYS)
