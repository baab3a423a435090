"""What an operator is shown, without any service: masked URLs, one-line service errors
naming the variable, Flower's login, and a step's result as Celery represents it."""

from __future__ import annotations

import string
from collections.abc import Iterator

import psycopg
import pytest
import redis.exceptions as rex
import sqlalchemy.exc as sqlexc
from celery.utils.saferepr import saferepr
from hypothesis import given
from hypothesis import strategies as st
from kombu.utils.json import dumps, loads
from pydantic import SecretStr

from config import Settings
from config.masking import mask_text, mask_url
from orchestrator import runtime
from orchestrator.cli.flower import basic_auth
from orchestrator.errors import ConfigError, ServiceMisconfigured, ServiceUnavailable
from tasks.result import SUMMARY_CHARS, StepResult, summarize

BROKER = "redis://:R3dis-planted@10.0.0.1:6379/0"
SHARD = "redis://:Sh4rd-planted@10.0.0.2:6380/0"
DATABASE = "postgresql+psycopg://app:Pg-planted@10.0.0.3:5432/orch"


@pytest.fixture
def configured() -> Iterator[Settings]:
    settings = Settings(redis_url=BROKER, database_url=DATABASE,
                        state_redis_urls=[BROKER, SHARD])
    runtime.configure(settings)
    yield settings
    runtime.configure(Settings())


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
    ("postgres://app:S3cr3t@db/orch", "postgres://app:***@db/orch"),
    ("redis://u:p@ss/w:rd@host/0", "redis://u:***@host/0"),
    ("redis://host:6379/0", "redis://host:6379/0"),
    ("postgresql+psycopg://app@db/orch", "postgresql+psycopg://app@db/orch"),
])
def test_mask_url_hides_the_password_only(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_mask_text_masks_every_url_of_a_list_and_named_secrets() -> None:
    text = "to redis://:a,b@h1:1/0,redis://:c@h2:2/1 with key sk-planted-1"
    assert mask_text(text, ["sk-planted-1"]) == (
        "to redis://:***@h1:1/0,redis://:***@h2:2/1 with key ***")


@given(st.sampled_from(["redis", "rediss", "postgresql+psycopg", "https"]),
       st.text(string.ascii_letters + string.digits + "@:/?#[]%,;=", min_size=1, max_size=20),
       st.text(string.ascii_letters + string.digits + ".-:/", max_size=20))
def test_a_masked_url_never_holds_its_password(scheme: str, tail: str, host: str) -> None:
    password = f"Pw-{tail}"
    url = f"{scheme}://user:{password}@{host}"
    assert password not in mask_url(url)
    assert password not in mask_text(f"error at {url} (refused)")
    assert password not in mask_text(f"got '{url}', then ({url})")


def _failure(exc: BaseException) -> ServiceUnavailable | ServiceMisconfigured:
    found = runtime.service_failure(exc)
    assert isinstance(found, ServiceUnavailable | ServiceMisconfigured)
    message = str(found)
    assert "\n" not in message
    for secret in ("R3dis-planted", "Sh4rd-planted", "Pg-planted"):
        assert secret not in message
    return found


def test_redis_refusing_connections_is_an_outage_naming_the_broker(
        configured: Settings) -> None:
    found = _failure(rex.ConnectionError("Error 111 connecting to 10.0.0.1:6379. "
                                         "Connection refused."))
    assert isinstance(found, ServiceUnavailable) and found.variable == "ORCH_REDIS_URL"
    assert "redis://:***@10.0.0.1:6379/0" in str(found) and "connection refused" in str(found)


def test_an_error_naming_a_shard_names_the_shards_variable(configured: Settings) -> None:
    found = _failure(rex.TimeoutError("Timeout connecting to 10.0.0.2:6380"))
    assert isinstance(found, ServiceUnavailable)
    assert found.variable == "ORCH_STATE_REDIS_URLS"
    assert found.address == "redis://:***@10.0.0.2:6380/0"


@pytest.mark.parametrize(("error", "fragment"), [
    (rex.AuthenticationError("invalid username-password pair or user is disabled."),
     "refused the password"),
    (rex.AuthenticationError("Authentication required."), "wants a password"),
    (rex.ResponseError("DB index is out of range"), "no such database number"),
    (rex.ConnectionError("Error -2 connecting to nohost:6379. Name or service not known."),
     "does not resolve"),
])
def test_redis_refusing_us_for_a_reason_in_the_url_is_configuration(
        configured: Settings, error: Exception, fragment: str) -> None:
    found = _failure(error)
    assert isinstance(found, ServiceMisconfigured) and isinstance(found, ConfigError)
    assert found.variable == "ORCH_REDIS_URL" and fragment in str(found)


def _pg(message: str) -> sqlexc.OperationalError:
    return sqlexc.OperationalError("SELECT 1", {}, psycopg.OperationalError(message))


@pytest.mark.parametrize(("message", "outage", "fragment"), [
    ('connection failed: connection to server at "10.0.0.3", port 5432 failed: Connection '
     "refused\n\tIs the server running on that host and accepting TCP/IP connections?",
     True, "connection refused"),
    ('connection failed: connection to server at "10.0.0.3", port 5432 failed: FATAL:  '
     'password authentication failed for user "app"', False, "password authentication"),
    ('connection failed: connection to server at "10.0.0.3", port 5432 failed: FATAL:  '
     'database "orch" does not exist', False, "no database 'orch'"),
    ("failed to resolve host 'nohost': [Errno -2] Name or service not known", False,
     "does not resolve"),
    ("connection timeout expired", True, "timed out"),
])
def test_postgresql_errors_name_the_database_variable(
        configured: Settings, message: str, outage: bool, fragment: str) -> None:
    found = _failure(_pg(message))
    assert isinstance(found, ServiceUnavailable) is outage
    assert found.variable == "ORCH_DATABASE_URL"
    assert "postgresql+psycopg://app:***@10.0.0.3:5432/orch" in str(found)
    assert fragment in str(found)


def test_a_wrapped_driver_error_is_found_through_its_cause(configured: Settings) -> None:
    try:
        try:
            raise rex.ConnectionError("Error 111 connecting to 10.0.0.1:6379. Refused.")
        except rex.ConnectionError as exc:
            raise RuntimeError("kombu.exceptions.OperationalError: publish failed") from exc
    except RuntimeError as wrapped:
        assert _failure(wrapped).variable == "ORCH_REDIS_URL"


def test_other_errors_are_not_service_failures(configured: Settings) -> None:
    assert runtime.service_failure(ValueError("boom")) is None
    assert runtime.service_failure(rex.ResponseError("WRONGTYPE Operation")) is None


def _flower(user: str | None, password: str | None) -> Settings:
    return Settings(flower_user=user,
                    flower_password=None if password is None else SecretStr(password))


def test_flower_gets_a_password_with_commas_as_one_credential() -> None:
    assert basic_auth(_flower("admin", "a,b:c d")) == "admin:a,b:c d"


@pytest.mark.parametrize(("user", "password", "fragment"), [
    ("admin", "", "ORCH_FLOWER_PASSWORD is empty"),
    ("admin", "   ", "ORCH_FLOWER_PASSWORD is empty"),
    ("admin", None, "must be set"),
    (None, "pw", "must be set"),
    ("   ", "pw", "ORCH_FLOWER_USER is blank"),
    ("ad:min", "pw", "ORCH_FLOWER_USER holds ':'"),
])
def test_flower_refuses_a_login_basic_auth_cannot_keep(user: str | None, password: str | None,
                                                       fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        basic_auth(_flower(user, password))


CONTEXT = {"invocation_id": "inv-1", "workflow": "support-triage",
           "payload": {"message": "card 4111111111111111"},
           "outputs": {"classify": {"label": "billing"}}}


def test_a_step_result_travels_as_the_context_and_shows_as_its_summary() -> None:
    record = {"status": "done", "pt": 120, "ct": 30, "fallback": False}
    summary = summarize("step 2/5 'classify' of support-triage inv-1", record, 0.25)
    result = StepResult(CONTEXT, summary)
    assert loads(dumps([result, 1])) == [CONTEXT, 1]  # what the next step receives
    shown = saferepr(result, SUMMARY_CHARS)  # what Celery's event and log line carry
    assert shown == ("step 2/5 'classify' of support-triage inv-1: done in 0.250s, "
                     "tokens 150 (120 prompt, 30 completion)")
    assert "4111" not in shown and "billing" not in shown


def test_a_passed_on_step_says_so_without_the_context() -> None:
    shown = saferepr(StepResult(CONTEXT, summarize("step 1/5", None, 0.01)), SUMMARY_CHARS)
    assert shown == "step 1/5: already done, passed on in 0.010s"
