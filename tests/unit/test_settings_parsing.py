"""How ORCH_* variables are read: lists, per-queue thresholds, URLs, cross-field checks."""

from __future__ import annotations

import os

import pytest

from config import InvalidSettings, load_settings
from config.settings import SIMULATED_LLM_KEYS, SIMULATED_LLM_URL


@pytest.fixture(autouse=True)
def _no_orch_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: not the ORCH_* of the shell that runs the tests."""
    for name in list(os.environ):
        if name.startswith("ORCH_"):
            monkeypatch.delenv(name)


def test_per_queue_thresholds_override_the_default_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_MAX_QUEUE_DEPTH", "500")
    monkeypatch.setenv("ORCH_MAX_QUEUE_DEPTHS", "llm=2000, tools=50")
    settings = load_settings()
    assert settings.max_queue_depths == {"llm": 2000, "tools": 50}
    assert [settings.queue_depth_limit(q) for q in ("llm", "tools", "agents")] == [2000, 50, 500]


@pytest.mark.parametrize("value", ["llm", "llm=0", "llm=many", "llm=5,tools"])
def test_bad_queue_threshold_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ORCH_MAX_QUEUE_DEPTHS", value)
    with pytest.raises(InvalidSettings) as caught:
        load_settings()
    assert caught.value.variable == "ORCH_MAX_QUEUE_DEPTHS"
    assert "queue=positive number" in caught.value.message


def test_http_urls_lose_their_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_LLM_BASE_URL", "https://api.example.com/v1/")
    monkeypatch.setenv("ORCH_LLM_API_KEYS", "sk-1")
    monkeypatch.setenv("ORCH_TOOLS_URL", "http://tools:8080/")
    settings = load_settings()
    assert settings.llm_endpoint == "https://api.example.com/v1"
    assert settings.tools_endpoint == "http://tools:8080"


def test_unset_llm_url_and_keys_mean_the_built_in_simulator() -> None:
    settings = load_settings()
    assert settings.llm_endpoint == SIMULATED_LLM_URL
    assert settings.api_keys() == list(SIMULATED_LLM_KEYS)


@pytest.mark.parametrize(
    ("url_variable", "keys_variable"),
    [("ORCH_LLM_BASE_URL", "ORCH_LLM_API_KEYS"),
     ("ORCH_LLM_FALLBACK_BASE_URL", "ORCH_LLM_FALLBACK_API_KEYS")],
)
def test_a_provider_url_without_keys_names_the_missing_keys(
    monkeypatch: pytest.MonkeyPatch, url_variable: str, keys_variable: str
) -> None:
    monkeypatch.setenv("ORCH_LLM_BASE_URL", "https://api.example.com/v1")
    monkeypatch.setenv("ORCH_LLM_API_KEYS", "sk-1")
    monkeypatch.delenv(keys_variable, raising=False)
    monkeypatch.setenv(url_variable, "https://other.example.com/v1")
    with pytest.raises(InvalidSettings) as caught:
        load_settings()
    assert caught.value.variable == keys_variable


def test_memory_layer_shards_default_to_the_broker_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_REDIS_URL", "redis://127.0.0.1:6379/3")
    assert load_settings().shard_urls == ["redis://127.0.0.1:6379/3"]
    monkeypatch.delenv("ORCH_REDIS_URL")
    assert load_settings().shard_urls == []


def test_write_back_prefixes_are_a_comma_list_and_may_be_emptied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().state_write_back_prefixes == ["customer:"]
    monkeypatch.setenv("ORCH_STATE_WRITE_BACK_PREFIXES", "customer:, session:")
    assert load_settings().state_write_back_prefixes == ["customer:", "session:"]
    monkeypatch.setenv("ORCH_STATE_WRITE_BACK_PREFIXES", "")
    assert load_settings().state_write_back_prefixes == []


@pytest.mark.parametrize(("value", "enabled"), [("false", False), ("0", False), ("true", True)])
def test_breakers_can_be_switched_off(
    monkeypatch: pytest.MonkeyPatch, value: str, enabled: bool
) -> None:
    monkeypatch.setenv("ORCH_BREAKERS_ENABLED", value)
    assert load_settings().breakers_enabled is enabled


def test_zero_retries_is_allowed_but_not_fewer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_STEP_MAX_RETRIES", "0")
    assert load_settings().step_max_retries == 0
    monkeypatch.setenv("ORCH_STEP_MAX_RETRIES", "-1")
    with pytest.raises(InvalidSettings, match="must be zero or more"):
        load_settings()


@pytest.mark.parametrize("value", ["0", "0.5", "2", "60"])
def test_llm_window_margin_may_be_zero_up_to_a_minute(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ORCH_LLM_WINDOW_MARGIN", value)
    assert load_settings().llm_window_margin == float(value)


@pytest.mark.parametrize("value", ["-0.1", "60.5", "nan", "inf", "half"])
def test_bad_llm_window_margin_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ORCH_LLM_WINDOW_MARGIN", value)
    with pytest.raises(InvalidSettings) as caught:
        load_settings()
    assert caught.value.variable == "ORCH_LLM_WINDOW_MARGIN"


@pytest.mark.parametrize("value", ["0.01", "1", "60"])
def test_llm_probe_after_is_a_pause_of_at_most_a_minute(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ORCH_LLM_PROBE_AFTER", value)
    assert load_settings().llm_probe_after == float(value)


@pytest.mark.parametrize("value", ["0", "-1", "61", "nan", "soon"])
def test_bad_llm_probe_after_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ORCH_LLM_PROBE_AFTER", value)
    with pytest.raises(InvalidSettings) as caught:
        load_settings()
    assert caught.value.variable == "ORCH_LLM_PROBE_AFTER"


def test_llm_window_margin_and_probe_after_defaults() -> None:
    settings = load_settings()
    assert (settings.llm_window_margin, settings.llm_probe_after) == (0.5, 1.0)

