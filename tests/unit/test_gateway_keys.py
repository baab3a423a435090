"""The gateway and keys the provider refuses, over in-memory limiters and a scripted
provider (httpx's mock transport): the key leaves the rotation, the fallback answers,
one call probes the key after its cool-off, and nothing names a key by its value."""

from __future__ import annotations

import logging
from typing import cast

import httpx
import pytest
import redis
from pydantic import SecretStr

from config import Settings
from orchestrator.breakers import Breakers
from orchestrator.errors import ProviderOutage
from orchestrator.llm.gateway import Gateway, providers
from orchestrator.llm.keys import fingerprint
from orchestrator.llm.rotation import NoUsableKey
from orchestrator.testing import ManualClock, MemoryBreakerStore, MemoryLimiter

PRIMARY, FALLBACK = "http://primary.test/v1", "http://fallback.test/v1"
KEYS = ("sk-primary-one", "sk-primary-two")
FALLBACK_KEY = "sk-fallback"
COOLOFF = 60.0
MESSAGES = [{"role": "user", "content": "hello"}]


class _Counters:
    """Stands for the Redis client the gateway counts in (no Redis in unit tests)."""

    def __init__(self) -> None:
        self.counted: dict[str, int] = {}

    def hincrby(self, _hash: str, name: str, amount: int) -> None:
        self.counted[name] = self.counted.get(name, 0) + amount


class ScriptedProvider:
    """Answers 401 for the keys in ``refused``, a completion for the others; logs calls."""

    def __init__(self) -> None:
        self.refused: set[str] = set()
        self.calls: list[tuple[str, str]] = []  # (base URL, key)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = request.headers["authorization"].removeprefix("Bearer ")
        base = str(request.url).removesuffix("/chat/completions")
        self.calls.append((base, key))
        if key in self.refused:
            return httpx.Response(401, json={"error": {
                "message": f"Incorrect API key provided: {key[:6]}***{key[-2:]}"}})
        return httpx.Response(200, json={
            "model": "m", "choices": [{"message": {"content": "hi"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1}})

    def keys_called(self, base: str) -> list[str]:
        return [key for url, key in self.calls if url == base]


def _gateway(scripted: ScriptedProvider, *, fallback: bool,
             ) -> tuple[Gateway, ManualClock, _Counters]:
    clock = ManualClock()
    settings = Settings(
        llm_base_url=PRIMARY, llm_api_keys=[SecretStr(k) for k in KEYS],
        llm_fallback_base_url=FALLBACK if fallback else None,
        llm_fallback_api_keys=[SecretStr(FALLBACK_KEY)] if fallback else [],
        llm_key_cooloff=COOLOFF, llm_max_wait=1.0)
    limiters = {p.name: MemoryLimiter(p, lease_seconds=65, cooloff=COOLOFF, clock=clock)
                for p in providers(settings)}
    counters = _Counters()
    gateway = Gateway(settings, cast(redis.Redis, counters),
                      httpx.Client(transport=httpx.MockTransport(scripted)),
                      Breakers(MemoryBreakerStore(clock), lambda: "worker-1"),
                      limiters=limiters)
    return gateway, clock, counters


def test_every_primary_key_refused_the_fallback_answers() -> None:
    scripted = ScriptedProvider()
    scripted.refused = set(KEYS)
    gateway, _, counters = _gateway(scripted, fallback=True)
    done = gateway.complete(MESSAGES, max_tokens=10)
    assert done.provider == "fallback"
    assert sorted(scripted.keys_called(PRIMARY)) == sorted(KEYS)  # each refused once
    assert gateway.limiters["primary"].revoked() == {fingerprint(k) for k in KEYS}
    assert counters.counted["llm_keys_revoked:primary"] == 2
    for _ in range(3):  # while they cool off, the primary is not called at all
        assert gateway.complete(MESSAGES, max_tokens=10).provider == "fallback"
    assert len(scripted.keys_called(PRIMARY)) == 2


def test_after_the_cooloff_one_call_probes_and_the_key_comes_back() -> None:
    scripted = ScriptedProvider()
    scripted.refused = {KEYS[0]}
    gateway, clock, counters = _gateway(scripted, fallback=False)
    for _ in range(4):
        gateway.complete(MESSAGES, max_tokens=10)
    assert scripted.keys_called(PRIMARY).count(KEYS[0]) == 1
    scripted.refused.clear()  # the provider takes the key again
    clock.advance(COOLOFF)
    done = gateway.complete(MESSAGES, max_tokens=10)
    assert done.key_id == fingerprint(KEYS[0])  # the probe goes first, and answers
    assert gateway.limiters["primary"].revoked() == set()
    assert counters.counted["llm_keys_restored:primary"] == 1
    used = {gateway.complete(MESSAGES, max_tokens=10).key_id for _ in range(6)}
    assert used == {fingerprint(k) for k in KEYS}


def test_refused_probe_keeps_the_key_out_for_twice_as_long() -> None:
    scripted = ScriptedProvider()
    scripted.refused = {KEYS[0]}
    gateway, clock, _ = _gateway(scripted, fallback=False)
    gateway.complete(MESSAGES, max_tokens=10)
    gateway.complete(MESSAGES, max_tokens=10)
    clock.advance(COOLOFF)
    gateway.complete(MESSAGES, max_tokens=10)  # the probe is refused; the other key answers
    assert scripted.keys_called(PRIMARY).count(KEYS[0]) == 2
    [out] = gateway.limiters["primary"].out_of_rotation().values()
    assert out.strikes == 2 and (out.probe_at_ms - out.last_ms) / 1000 == 2 * COOLOFF
    clock.advance(COOLOFF)
    for _ in range(5):
        gateway.complete(MESSAGES, max_tokens=10)
    assert scripted.keys_called(PRIMARY).count(KEYS[0]) == 2


def test_no_key_and_no_fallback_is_an_outage_naming_keys_never_their_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scripted = ScriptedProvider()
    scripted.refused = set(KEYS)
    gateway, _, _ = _gateway(scripted, fallback=False)
    with caplog.at_level(logging.INFO), pytest.raises(NoUsableKey) as caught:
        gateway.complete(MESSAGES, max_tokens=10)
    assert isinstance(caught.value, ProviderOutage)
    message = str(caught.value)
    for key in KEYS:
        assert f"{fingerprint(key)} refused with HTTP 401" in message
    assert caught.value.retry_after == pytest.approx(COOLOFF)
    shown = message + caplog.text
    assert fingerprint(KEYS[0]) in caplog.text
    assert not any(key in shown or key[:6] + "***" in shown for key in KEYS)


def test_no_usable_key_and_the_fallback_down_holds_with_both_reasons() -> None:
    scripted = ScriptedProvider()
    scripted.refused = {*KEYS, FALLBACK_KEY}
    gateway, _, _ = _gateway(scripted, fallback=True)
    with pytest.raises(ProviderOutage) as caught:
        gateway.complete(MESSAGES, max_tokens=10)
    message = str(caught.value)
    assert "LLM provider primary: no usable API key" in message
    assert f"LLM provider fallback: no usable API key ({fingerprint(FALLBACK_KEY)}" in message
    assert caught.value.retry_after == pytest.approx(COOLOFF)
