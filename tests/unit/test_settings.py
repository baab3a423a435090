"""Settings are validated at start, naming the variable that is wrong."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from config import InvalidSettings, Settings, build_celery_config, load_settings
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
        ("ORCH_LLM_MAX_WAIT", "0", "positive number of seconds"),
        ("ORCH_LLM_KEY_COOLOFF", "-1", "positive number of seconds"),
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


def _clear_orch_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ORCH_"):
            monkeypatch.delenv(name)


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


# Every field changed from its default (a test below checks that none is missed).
EVERY_FIELD_CHANGED: dict[str, Any] = {
    "redis_url": "redis://127.0.0.1:6390/4",
    "database_url": "postgresql+psycopg://u:p@db:5433/orch",
    "state_redis_urls": ["redis://127.0.0.1:7001/0", "redis://127.0.0.1:7002/0"],
    "state_write_back_prefixes": ["customer:", "session:"],
    "state_dirty_limit": 7,
    "data_dir": Path("/tmp/orch-data"),
    "llm_base_url": "https://llm.example/v1",
    "llm_api_keys": [SecretStr("sk-one"), SecretStr("sk-two")],
    "llm_model": "gpt-x",
    "llm_rpm": 61,
    "llm_tpm": 4001,
    "llm_concurrency": 3,
    "llm_timeout": 12.5,
    "llm_max_wait": 30.25,
    "llm_retry_budget": 2,
    "llm_key_cooloff": 42.5,
    "llm_window_margin": 0.25,
    "llm_probe_after": 2.5,
    "llm_fallback_base_url": "https://fallback.example/v1",
    "llm_fallback_api_keys": [SecretStr("fb-one")],
    "llm_fallback_model": "other-model",
    "max_queue_depth": 99,
    "max_queue_depths": {"llm": 20, "tools": 50},
    "tools_url": "http://tools.example:8080",
    "flower_user": "admin",
    "flower_password": SecretStr("s3cret"),
    "workflow_modules": ["orchestrator.agents", "tests.workloads"],
    "breakers_enabled": False,
    "max_payload_bytes": 1024,
    "visibility_timeout": 120,
    "step_lease_seconds": 30,
    "step_max_retries": 0,
    "step_max_deliveries": 2,
    "step_time_limit": 45,
    "llm_outage_hold": 90.5,
    "stall_seconds": 75,
    "reconcile_max_redispatches": 1,
    "retention_days": 7,
    "worker_stall_exit_seconds": 12.5,
    "log_format": "json",
    "agents_concurrency": 5,
    "llm_worker_concurrency": 6,
    "tools_worker_concurrency": 7,
}


def test_every_field_is_changed_in_the_round_trip_sample() -> None:
    for name, field in Settings.model_fields.items():
        assert name in EVERY_FIELD_CHANGED, f"add {name} to EVERY_FIELD_CHANGED"
        default = field.get_default(call_default_factory=True)
        assert _plain(EVERY_FIELD_CHANGED[name]) != _plain(default), name


def test_environment_reproduces_the_settings_in_a_child(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_orch_environment(monkeypatch)
    changed = Settings(**EVERY_FIELD_CHANGED)
    for name, value in changed.environment().items():
        monkeypatch.setenv(name, value)
    assert load_settings() == changed


def test_environment_passes_an_emptied_default_list(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_orch_environment(monkeypatch)
    emptied = Settings(workflow_modules=[], state_write_back_prefixes=[])
    env = emptied.environment()
    assert env["ORCH_WORKFLOW_MODULES"] == "" and "ORCH_STATE_REDIS_URLS" not in env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings() == emptied


def test_environment_without_secrets_leaves_keys_and_passwords_out() -> None:
    env = Settings(**EVERY_FIELD_CHANGED).environment(secrets=False)
    assert not {"ORCH_LLM_API_KEYS", "ORCH_LLM_FALLBACK_API_KEYS",
                "ORCH_FLOWER_PASSWORD"} & env.keys()
    assert env["ORCH_FLOWER_USER"] == "admin"


def test_every_field_takes_its_declared_default() -> None:
    """A validator that forgets to return its value turns a setting into None: every
    field of a default Settings() equals the default it declares."""
    settings = Settings()
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None or field.default is None:
            continue
        assert getattr(settings, name) == field.default, name
