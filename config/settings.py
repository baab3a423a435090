"""The settings object: every ``ORCH_*`` variable, typed and validated at start."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from config.masking import mask_text

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


# What a URL of each kind looks like, for error messages.
_URL_EXAMPLES = {
    "redis": "redis://host:6379/0",
    "postgresql+psycopg": "postgresql+psycopg://user@host:5432/db",
    "http": "http://host/v1",
}


def _check_url(value: str | None, schemes: tuple[str, ...]) -> str | None:
    """``value`` if it is a URL of one of ``schemes``; the error never repeats the value,
    which may hold a password: it names what is wrong (the scheme, a missing host)."""
    if value is None or value == "":
        return None
    example = _URL_EXAMPLES.get(schemes[0], f"{schemes[0]}://host")
    if "://" not in value:
        raise ValueError(f"expected a URL like {example}, got a value without "
                         "scheme:// (not shown: it may hold a password)")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - a port that is not a number fails here
    except ValueError:
        # urlsplit's own message may quote part of the value (a "port" cut out of a
        # password holding a "/"): say where to look instead.
        raise ValueError(f"expected a URL like {example}, got one that does not parse: "
                         "check the port and any [ ] (the value is not shown: it may "
                         "hold a password)") from None
    if parts.scheme not in schemes:
        scheme = repr(parts.scheme) if parts.scheme.isascii() else "an unknown one"
        raise ValueError(f"expected a URL like {example} (scheme {' or '.join(schemes)}), "
                         f"got scheme {scheme}")
    if not parts.netloc:
        raise ValueError(f"expected a URL like {example}, got one without a host")
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
    llm_max_wait: float = Field(default=300.0, description="seconds a call may wait in line")
    llm_retry_budget: int = Field(default=6, description="provider attempts per LLM step")
    llm_key_cooloff: float = Field(
        default=300.0, description="seconds a key refused with 401/403 stays out of rotation "
                                   "before one call probes it (doubling after each refused "
                                   "probe, up to an hour)")
    llm_window_margin: float = Field(
        default=0.5, description="seconds an LLM call keeps counting in its key's minute past "
                                 "the provider's minute (from its admission and from its "
                                 "completion): the spread of the provider's own clock and "
                                 "counting delay it covers")
    llm_probe_after: float = Field(
        default=1.0, description="seconds after a 429 with only a retry-after (read as an "
                                 "upper bound) before one call probes the key, doubling "
                                 "while probes get 429s, never past the retry-after")

    llm_fallback_base_url: str | None = Field(default=None, description="second provider")
    llm_fallback_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    llm_fallback_model: str | None = None

    max_queue_depth: int = Field(default=10_000, description="backpressure threshold")
    max_queue_depths: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict, description="per-queue thresholds: llm=2000,tools=5000"
    )

    tools_url: str | None = Field(default=None, description="base URL of the HTTP tools")

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
    step_lease_seconds: int = Field(
        default=60, description="a running step's claim, renewed every third of it while "
                                "it runs; a claim not renewed for this long is dead")
    step_max_retries: int = Field(
        default=5, description="retries of a step after transient errors; the last attempt "
                               "serves a tool's fallback or fails the invocation")
    step_max_deliveries: int = Field(
        default=5, description="deliveries of a step that may die (worker killed) before "
                               "its invocation fails")
    step_time_limit: int = Field(
        default=600, description="seconds a python step may run (soft limit; the worker "
                                 "process is killed 30 s later)")
    llm_outage_hold: float = Field(
        default=600.0, description="seconds an LLM step waits out a provider outage (5xx, "
                                   "timeouts) before it fails")
    stall_seconds: int = Field(
        default=600, description="an unfinished invocation without progress this long is "
                                 "re-dispatched (or failed) by the reconciler")
    retention_days: int = Field(
        default=30, description="finished invocations older than this are deleted, in "
                                "batches, by the reconciler (0: kept for ever)")
    reconcile_max_redispatches: int = Field(
        default=3, description="re-dispatches of one stalled invocation before it fails")
    worker_stall_exit_seconds: float = Field(
        default=60.0, description="a worker whose broker connection was lost and that has "
                                  "not consumed again for this long exits (code 1), for its "
                                  "supervisor to restart it")

    log_format: Literal["text", "json"] = Field(
        default="text", description="worker and long-running commands' log lines: text, or "
                                    "json (one object a line)")

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

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

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
        "max_payload_bytes",
        "visibility_timeout",
        "step_lease_seconds",
        "step_max_deliveries",
        "step_time_limit",
        "stall_seconds",
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

    @field_validator("llm_timeout", "llm_max_wait", "llm_outage_hold", "llm_key_cooloff",
                     "worker_stall_exit_seconds")
    @classmethod
    def _positive_seconds(cls, value: float) -> float:
        if not 0 < value < math.inf:  # NaN compares false: refused too
            raise ValueError(f"must be a positive number of seconds, got {value}")
        return value

    @field_validator("llm_window_margin")
    @classmethod
    def _window_margin(cls, value: float) -> float:
        # Past a minute the key's window is doubled: a typo, not a margin.
        if not 0 <= value <= 60:  # NaN compares false: refused too
            raise ValueError(f"must be between 0 and 60 seconds, got {value}")
        return value

    @field_validator("llm_probe_after")
    @classmethod
    def _probe_after(cls, value: float) -> float:
        # A probe needs a pause (0 would probe a key the provider just refused, at once);
        # past a minute it is never sooner than a gateway's retry-after: 60.
        if not 0 < value <= 60:
            raise ValueError(f"must be more than 0 and at most 60 seconds, got {value}")
        return value

    @field_validator("step_max_retries", "reconcile_max_redispatches", "retention_days")
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

    def with_services(self, *, redis_url: str, database_url: str) -> Settings:
        """A copy pointing at the given services (used after starting embedded ones)."""
        return self.model_copy(update={"redis_url": redis_url, "database_url": database_url})

    def environment(self, *, secrets: bool = True) -> dict[str, str]:
        """The ``ORCH_*`` variables that reproduce these settings in a child process.

        Derived from the fields, so a new setting is passed on without being listed here:
        each field that is set becomes ``ORCH_<NAME>`` (lists comma-joined, dicts
        ``k=v,...``, secrets in clear, booleans ``true``/``false``). ``None`` and empty
        values are left out, except an empty list or dict whose default is not empty: it
        is passed as ``""``, so the child does not fall back to the default.
        ``secrets=False`` leaves out the secret settings (for printing).
        """
        env: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if value is None or (not secrets and _is_secret(value)):
                continue
            text = _env_value(value)
            if text == "" and not field.get_default(call_default_factory=True):
                continue
            env[ENV_PREFIX + name.upper()] = text
        return env


def _is_secret(value: Any) -> bool:
    if isinstance(value, list):
        return any(isinstance(item, SecretStr) for item in value)
    return isinstance(value, SecretStr)


def _env_value(value: Any) -> str:
    """``value`` as its environment variable spells it (what the validators read back)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_env_value(item) for item in value)
    if isinstance(value, dict):
        return ",".join(f"{key}={_env_value(item)}" for key, item in value.items())
    return str(value)


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
        raise InvalidSettings(variable, _message(error["msg"])) from None


def _message(text: str) -> str:
    """A validation message as people read it: without pydantic's "Value error, "
    prefix, and with any URL password masked (a safety net: no check repeats one)."""
    return mask_text(text.removeprefix("Value error, "))

