"""Settings are validated at start, naming the variable that is wrong."""

from __future__ import annotations

import pytest

from config import InvalidSettings, build_celery_config, load_settings
from orchestrator import runtime
from orchestrator.errors import ConfigError


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("ORCH_LLM_RPM", "0", "must be a positive whole number"),
        ("ORCH_LLM_TPM", "-5", "must be a positive whole number"),
        ("ORCH_LLM_CONCURRENCY", "many", "valid integer"),
        ("ORCH_LLM_BASE_URL", "api.openai.com/v1", "expected a URL like http://"),
        ("ORCH_REDIS_URL", "localhost:6379", "expected a URL like redis://"),
        ("ORCH_DATABASE_URL", "mysql://x@y/z", "expected a URL like postgresql+psycopg://"),
        ("ORCH_STATE_REDIS_URLS", "redis://a:1/0,b:2", "expected a URL like redis://"),
        ("ORCH_TOOL_READ_TIMEOUT", "0", "positive number of seconds"),
    ],
)
def test_bad_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidSettings) as caught:
        load_settings()
    assert caught.value.variable == variable
    assert fragment in str(caught.value)


def test_runtime_turns_bad_settings_into_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_LLM_RPM", "0")
    with pytest.raises(ConfigError, match="ORCH_LLM_RPM"):
        runtime.configure()


def test_lists_are_comma_separated_and_keys_stay_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_LLM_API_KEYS", "sk-one, sk-two")
    monkeypatch.setenv("ORCH_STATE_REDIS_URLS", "redis://127.0.0.1:7001/0,redis://127.0.0.1:7002/0")
    settings = load_settings()
    assert settings.api_keys() == ["sk-one", "sk-two"]
    assert settings.shard_urls == ["redis://127.0.0.1:7001/0", "redis://127.0.0.1:7002/0"]
    assert "sk-one" not in repr(settings)


def test_plain_postgresql_url_gets_the_psycopg_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_DATABASE_URL", "postgresql://u@db:5432/orch")
    assert load_settings().database_url == "postgresql+psycopg://u@db:5432/orch"


def test_celery_config_is_at_least_once_and_json_only() -> None:
    conf = build_celery_config(load_settings(redis_url="redis://127.0.0.1:6379/0",
                                             visibility_timeout=900))
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["accept_content"] == ["json"]
    assert conf["task_serializer"] == "json"
    assert conf["broker_transport_options"]["visibility_timeout"] == 900
    assert {q.name for q in conf["task_queues"]} == {"agents", "llm", "tools"}
