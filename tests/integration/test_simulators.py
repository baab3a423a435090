"""The simulators behave like the services they stand in for: limits, headers, outages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import openai
import pytest

from orchestrator.devstack.simulators.llm_provider import LLMSimConfig, start_in_process
from orchestrator.devstack.simulators.llm_provider import create_app as llm_app
from orchestrator.devstack.simulators.server import ServerHandle, start_server
from orchestrator.devstack.simulators.tool_server import ToolSimConfig
from orchestrator.devstack.simulators.tool_server import create_app as tools_app
from orchestrator.llm.ratelimit_headers import Budget, exhausted_reset, read_budgets

KEY = "sim-key-1"


@pytest.fixture
def llm() -> Iterator[ServerHandle]:
    handle = start_server(llm_app(LLMSimConfig(keys=(KEY,), rpm=5, concurrency=2,
                                               latency=0.3, jitter=0.0)))
    yield handle
    handle.stop()


def _chat(url: str, key: str = KEY, max_tokens: int = 20) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", timeout=10,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": "m", "max_tokens": max_tokens,
                            "messages": [{"role": "user", "content": "hello there"}]})


def test_official_openai_client_works_against_the_simulator(llm: ServerHandle) -> None:
    client = openai.OpenAI(base_url=f"{llm.url}/v1", api_key=KEY, max_retries=0)
    reply = client.chat.completions.create(
        model="sim-gpt", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens == 10


def test_unknown_key_is_401_and_never_echoed(llm: ServerHandle) -> None:
    response = _chat(llm.url, key="sk-not-a-key-123")
    assert response.status_code == 401
    assert "sk-not-a-key-123" not in response.text


def test_concurrency_limit_gives_429_with_retry_after_and_ratelimit_headers(
    llm: ServerHandle,
) -> None:
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: _chat(llm.url), range(4)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 200, 429, 429]
    limited = next(r for r in responses if r.status_code == 429)
    assert float(limited.headers["retry-after"]) > 0
    for header in ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                   "x-ratelimit-reset-requests", "x-ratelimit-remaining-tokens"):
        assert header in limited.headers
    stats = httpx.get(f"{llm.url}/stats").json()
    assert stats["keys"]["0"]["429_concurrency"] == 2
    assert stats["keys"]["0"]["max_in_flight"] == 2
    assert KEY not in str(stats)


def test_rpm_limit_counts_a_rolling_minute(llm: ServerHandle) -> None:
    codes = [_chat(llm.url).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    stats = httpx.get(f"{llm.url}/stats").json()["keys"]["0"]
    assert stats["429_rpm"] == 1 and stats["max_requests_60s"] == 5


def test_outage_and_revocation_switch_at_run_time(llm: ServerHandle) -> None:
    httpx.post(f"{llm.url}/admin/config", json={"outage": True}).raise_for_status()
    assert _chat(llm.url).status_code == 503
    httpx.post(f"{llm.url}/admin/config", json={"outage": False}).raise_for_status()
    httpx.post(f"{llm.url}/admin/revoke", json={"key": KEY}).raise_for_status()
    assert _chat(llm.url).status_code == 401
    bad = httpx.post(f"{llm.url}/admin/config", json={"no_such": 1})
    assert bad.status_code == 400 and "unknown settings" in bad.text


def test_tool_server_latency_outage_and_stats() -> None:
    with start_server(tools_app(ToolSimConfig(latency=0.01, jitter=0.0,
                                              hang_seconds=1.0))) as tools:
        ok = httpx.post(f"{tools.url}/tools/lookup_order", json={"customer_id": "c1"})
        assert ok.status_code == 200 and ok.json()["customer_id"] == "c1"
        assert httpx.post(f"{tools.url}/tools/nope", json={}).status_code == 404
        httpx.post(f"{tools.url}/admin/outage",
                   json={"tool": "lookup_order", "mode": "error"}).raise_for_status()
        assert httpx.post(f"{tools.url}/tools/lookup_order", json={}).status_code == 503
        httpx.post(f"{tools.url}/admin/outage",
                   json={"tool": "lookup_order", "mode": "hang"}).raise_for_status()
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{tools.url}/tools/lookup_order", json={}, timeout=0.3)
        stats = httpx.get(f"{tools.url}/stats").json()["tools"]["lookup_order"]
        assert stats["calls"] == 3 and stats["ok"] == 1 and stats["errors"] == 1
        assert stats["hangs"] == 1


def _phase_for_boundary_in(seconds: float) -> float:
    """The ``window_phase`` that puts a fixed window's boundary ``seconds`` from now."""
    return (time.time() + seconds) % 60


def test_fixed_window_counts_on_the_simulators_clock_and_forgets_at_its_boundary() -> None:
    config = LLMSimConfig(keys=(KEY,), rpm=3, concurrency=5, latency=0.0, jitter=0.0,
                          window="fixed", window_phase=_phase_for_boundary_in(1.5))
    with start_server(llm_app(config)) as gateway:
        assert [_chat(gateway.url).status_code for _ in range(4)] == [200, 200, 200, 429]
        limited = _chat(gateway.url)
        assert 0 < float(limited.headers["retry-after-ms"]) / 1000 <= 1.5
        time.sleep(float(limited.headers["retry-after-ms"]) / 1000 + 0.05)
        assert [_chat(gateway.url).status_code for _ in range(4)] == [200, 200, 200, 429]
        stats = httpx.get(f"{gateway.url}/stats").json()["keys"]["0"]
        assert stats["429_rpm"] == 3 and stats["succeeded"] == 6


def test_coarse_gateway_says_retry_after_60_whatever_the_reset() -> None:
    config = LLMSimConfig(keys=(KEY,), rpm=1, latency=0.0, jitter=0.0, window="fixed",
                          window_phase=_phase_for_boundary_in(30), retry_after=60,
                          header_style="gateway", header_scope="minute")
    with start_server(llm_app(config)) as gateway:
        ok = _chat(gateway.url)
        assert ok.headers["x-ratelimit-minute-remaining-requests"] == "0"
        assert ok.headers["x-ratelimit-minute-limit-requests"] == "1"
        assert "x-ratelimit-remaining-requests" not in ok.headers
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0)
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(
                model="sim-gpt", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        headers = refused.value.response.headers
        assert headers["retry-after"] == "60" and "retry-after-ms" not in headers
        requests, tokens = read_budgets(headers)
        assert requests == Budget("minute", "requests", 0, None)
        assert tokens.kind == "tokens" and tokens.remaining and tokens.reset is None


def test_anthropic_style_states_resets_as_rfc3339_times() -> None:
    config = LLMSimConfig(keys=(KEY,), rpm=2, latency=0.0, jitter=0.0,
                          header_style="anthropic")
    with start_server(llm_app(config)) as provider:
        for _ in range(2):
            ok = _chat(provider.url)
        assert ok.headers["anthropic-ratelimit-requests-remaining"] == "0"
        reset = datetime.fromisoformat(ok.headers["anthropic-ratelimit-requests-reset"])
        assert 58 < reset.timestamp() - time.time() <= 60.5
        assert exhausted_reset(ok.headers) == pytest.approx(60, abs=2)
        assert _chat(provider.url).status_code == 429


def test_unknown_window_or_header_style_is_refused_at_run_time(llm: ServerHandle) -> None:
    for patch in ({"window": "sliding"}, {"header_style": "azure"}):
        response = httpx.post(f"{llm.url}/admin/config", json=patch)
        assert response.status_code == 400 and "must be one of" in response.text
    switched = httpx.post(f"{llm.url}/admin/config", json={"window": "fixed",
                                                          "retry_after": 60})
    assert switched.json()["config"]["window"] == "fixed"


def test_slot_seconds_count_held_slots_in_flight_ones_up_to_now(llm: ServerHandle) -> None:
    with ThreadPoolExecutor(2) as pool:
        calls = [pool.submit(_chat, llm.url) for _ in range(2)]
        time.sleep(0.15)
        during = httpx.get(f"{llm.url}/stats", timeout=5).json()["busy_seconds"]
        assert all(c.result().status_code == 200 for c in calls)
    after = httpx.get(f"{llm.url}/stats", timeout=5).json()
    assert 0.1 < during < 0.6  # two slots held for ~0.15 s each so far
    assert after["busy_seconds"] == pytest.approx(0.6, abs=0.1)  # two slots, 0.3 s each
    assert after["keys"]["0"]["busy_seconds"] == after["busy_seconds"]


def test_simulator_in_its_own_process_serves_until_stopped() -> None:
    handle = start_in_process(LLMSimConfig(keys=(KEY,), rpm=1, latency=0.05, jitter=0.0))
    try:
        assert _chat(handle.url).status_code == 200
        assert _chat(handle.url).status_code == 429  # its limits, its own state
        totals = httpx.get(f"{handle.url}/stats", timeout=5).json()["totals"]
        assert (totals["succeeded"], totals["rate_limited_429"]) == (1, 1)
    finally:
        handle.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{handle.url}/stats", timeout=5)

