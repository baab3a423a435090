"""The settings object: every ``ORCH_*`` variable, typed and validated at start."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "ORCH_"
# Where `orchestrator up` / `demo` run the built-in simulators when no URL is configured.
SIMULATED_LLM_URL = "http://127.0.0.1:8900/v1"
SIMULATED_TOOLS_URL = "http://127.0.0.1:8901"
SIMULATED_LLM_KEYS = ("sim-key-1", "sim-key-2")


class InvalidSettings(ValueError):
    """A setting has a value the orchestrator cannot run with.

    ``variable`` names the environment variable, ``message`` says what was wrong.
    """

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable
        self.message = message


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _check_url(value: str | None, schemes: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"expected a URL like {schemes[0]}://host:port/..., got {value!r}")
    return value


class Settings(BaseSettings):
    """Every knob of the orchestrator. Unset service URLs mean "start embedded services"."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    redis_url: str | None = Field(default=None, description="broker, limiter, breakers")
    database_url: str | None = Field(default=None, description="invocations and state")
    state_redis_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="memory-layer shards; default: redis_url"
    )
    state_write_back_prefixes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["customer:"],
        description="state key prefixes kept in the write-back memory layer",
    )
    state_dirty_limit: int = Field(default=100_000, description="unflushed records per shard")
    data_dir: Path = Field(default=Path(".orchestrator"), description="embedded services' data")

    llm_base_url: str | None = Field(default=None, description="OpenAI-compatible .../v1")
    llm_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    llm_model: str = "sim-gpt"
    llm_rpm: int = Field(default=600, description="requests per minute, per key")
    llm_tpm: int = Field(default=400_000, description="tokens per minute, per key")
    llm_concurrency: int = Field(default=20, description="calls in flight, per key")
    llm_timeout: float = Field(default=60.0, description="seconds for one provider call")
    llm_max_tokens: int = 256
    llm_max_wait: float = Field(default=300.0, description="seconds a call may wait in line")
    llm_retry_budget: int = Field(default=6, description="provider attempts per LLM step")

    llm_fallback_base_url: str | None = Field(default=None, description="second provider")
    llm_fallback_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    llm_fallback_model: str | None = None

    max_queue_depth: int = Field(default=10_000, description="backpressure threshold")
    max_queue_depths: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict, description="per-queue thresholds: llm=2000,tools=5000"
    )

    tools_url: str | None = Field(default=None, description="base URL of the HTTP tools")
    tool_connect_timeout: float = 2.0
    tool_read_timeout: float = 10.0

    flower_user: str | None = None
    flower_password: SecretStr | None = None

    workflow_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["orchestrator.agents"],
        description="modules that declare workflows, imported by producers and workers",
    )

    breakers_enabled: bool = Field(
        default=True, description="circuit breakers on tools and providers (off: benchmarks)")

    max_payload_bytes: int = Field(default=256 * 1024, description="largest accepted payload")
    visibility_timeout: int = Field(default=3600, description="seconds before redelivery")
    step_lease_seconds: int = Field(default=300, description="a running step's claim")
    step_max_retries: int = 5

    agents_concurrency: int = 2
    llm_worker_concurrency: int = 32
    tools_worker_concurrency: int = 16

    @field_validator("max_queue_depths", mode="before")
    @classmethod
    def _depths(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        depths: dict[str, int] = {}
        for part in _split_csv(value):
            queue, sep, number = part.partition("=")
            if not sep or not number.strip().isdigit() or int(number) <= 0:
                raise ValueError(f"expected queue=positive number pairs, got {part!r}")
            depths[queue.strip()] = int(number)
        return depths

    @field_validator(
        "state_redis_urls", "llm_api_keys", "llm_fallback_api_keys", "workflow_modules",
        "state_write_back_prefixes", mode="before",
    )
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        return _check_url(value, ("redis", "rediss", "unix"))

    @field_validator("state_redis_urls")
    @classmethod
    def _shards(cls, value: list[str]) -> list[str]:
        for url in value:
            _check_url(url, ("redis", "rediss", "unix"))
        return value

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str | None) -> str | None:
        checked = _check_url(value, ("postgresql+psycopg", "postgresql"))
        if checked and checked.startswith("postgresql://"):
            checked = "postgresql+psycopg://" + checked[len("postgresql://") :]
        return checked

    @field_validator("llm_base_url", "tools_url", "llm_fallback_base_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        checked = _check_url(value, ("http", "https"))
        return checked.rstrip("/") if checked else None

    @field_validator(
        "llm_rpm",
        "llm_tpm",
        "llm_concurrency",
        "llm_max_tokens",
        "max_payload_bytes",
        "visibility_timeout",
        "step_lease_seconds",
        "agents_concurrency",
        "llm_worker_concurrency",
        "tools_worker_concurrency",
        "llm_retry_budget",
        "max_queue_depth",
        "state_dirty_limit",
    )
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(f"must be a positive whole number, got {value}")
        return value

    @field_validator("llm_timeout", "tool_connect_timeout", "tool_read_timeout", "llm_max_wait")
    @classmethod
    def _positive_seconds(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(f"must be a positive number of seconds, got {value}")
        return value

    @field_validator("step_max_retries")
    @classmethod
    def _non_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"must be zero or more, got {value}")
        return value

    @property
    def shard_urls(self) -> list[str]:
        """Memory-layer shards: ``ORCH_STATE_REDIS_URLS``, else the one ``ORCH_REDIS_URL``."""
        if self.state_redis_urls:
            return list(self.state_redis_urls)
        return [self.redis_url] if self.redis_url else []

    @model_validator(mode="after")
    def _keys_present(self) -> Settings:
        if self.llm_base_url and not self.llm_api_keys:
            raise ValueError(
                "ORCH_LLM_API_KEYS is empty but ORCH_LLM_BASE_URL is set: give at least one key"
            )
        if self.llm_fallback_base_url and not self.llm_fallback_api_keys:
            raise ValueError("ORCH_LLM_FALLBACK_API_KEYS is empty but a fallback URL is set")
        return self

    def queue_depth_limit(self, queue: str) -> int:
        """The backpressure threshold of ``queue``."""
        return self.max_queue_depths.get(queue, self.max_queue_depth)

    def fallback_keys(self) -> list[str]:
        return [key.get_secret_value() for key in self.llm_fallback_api_keys]

    def api_keys(self) -> list[str]:
        """The LLM keys in clear text (simulator keys when none set); never log them."""
        if not self.llm_api_keys:
            return list(SIMULATED_LLM_KEYS)
        return [key.get_secret_value() for key in self.llm_api_keys]

    @property
    def llm_endpoint(self) -> str:
        """``ORCH_LLM_BASE_URL``, or the built-in simulator's address."""
        return self.llm_base_url or SIMULATED_LLM_URL

    @property
    def tools_endpoint(self) -> str:
        """``ORCH_TOOLS_URL``, or the built-in tool simulator's address."""
        return self.tools_url or SIMULATED_TOOLS_URL

    @property
    def uses_simulators(self) -> bool:
        return self.llm_base_url is None or self.tools_url is None

    def with_services(self, *, redis_url: str, database_url: str) -> Settings:
        """A copy pointing at the given services (used after starting embedded ones)."""
        return self.model_copy(update={"redis_url": redis_url, "database_url": database_url})

    def environment(self) -> dict[str, str]:
        """The ``ORCH_*`` variables that reproduce these settings in a child process."""
        env: dict[str, str] = {}
        if self.redis_url:
            env["ORCH_REDIS_URL"] = self.redis_url
        if self.database_url:
            env["ORCH_DATABASE_URL"] = self.database_url
        if self.state_redis_urls:
            env["ORCH_STATE_REDIS_URLS"] = ",".join(self.state_redis_urls)
        if self.llm_base_url:
            env["ORCH_LLM_BASE_URL"] = self.llm_base_url
        if self.llm_api_keys:
            env["ORCH_LLM_API_KEYS"] = ",".join(self.api_keys())
        if self.llm_fallback_base_url:
            env["ORCH_LLM_FALLBACK_BASE_URL"] = self.llm_fallback_base_url
            env["ORCH_LLM_FALLBACK_API_KEYS"] = ",".join(self.fallback_keys())
        if self.llm_fallback_model:
            env["ORCH_LLM_FALLBACK_MODEL"] = self.llm_fallback_model
        env["ORCH_LLM_MODEL"] = self.llm_model
        for name in ("llm_rpm", "llm_tpm", "llm_concurrency", "llm_timeout", "llm_max_wait",
                     "visibility_timeout", "step_lease_seconds", "step_max_retries",
                     "max_queue_depth"):
            env[ENV_PREFIX + name.upper()] = str(getattr(self, name))
        if self.max_queue_depths:
            env["ORCH_MAX_QUEUE_DEPTHS"] = ",".join(
                f"{q}={n}" for q, n in self.max_queue_depths.items())
        if self.tools_url:
            env["ORCH_TOOLS_URL"] = self.tools_url
        env["ORCH_DATA_DIR"] = str(self.data_dir)
        env["ORCH_WORKFLOW_MODULES"] = ",".join(self.workflow_modules)
        env["ORCH_STATE_WRITE_BACK_PREFIXES"] = ",".join(self.state_write_back_prefixes)
        env["ORCH_STATE_DIRTY_LIMIT"] = str(self.state_dirty_limit)
        env["ORCH_BREAKERS_ENABLED"] = "true" if self.breakers_enabled else "false"
        return env


def load_settings(**overrides: Any) -> Settings:
    """Read the settings from the environment (and ``overrides``).

    Raises :class:`InvalidSettings` naming the first bad variable and what was wrong.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["loc"]:
            variable = ENV_PREFIX + str(error["loc"][0]).upper()
        else:  # a check across fields names its variable in the message
            named = re.search(r"ORCH_[A-Z_]+", error["msg"])
            variable = named.group(0) if named else ENV_PREFIX + "*"
        raise InvalidSettings(variable, error["msg"]) from None


def environ_snapshot() -> dict[str, str]:
    """The ``ORCH_*`` variables of this process, for handing to child processes."""
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
