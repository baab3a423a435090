"""Bad input at the boundary, property-based: whatever a caller or an environment hands
over is accepted exactly or refused with the orchestrator's own error, never another
exception, and a refusal never repeats a URL's password."""

from __future__ import annotations

import json
import math
import os
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict

from config import InvalidSettings, Settings, load_settings
from config.settings import ENV_PREFIX
from orchestrator.errors import InvalidPayload
from orchestrator.payload import validate
from orchestrator.state.record import check_key, check_value

# Any value the json module will encode: every scalar it takes (NaN, infinities, NUL
# and lone surrogates in text included) in lists and objects, keys of any type it
# coerces (str, int, float, bool, None).
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
           | st.text())
KEYS = st.text() | st.integers() | st.booleans() | st.none() | st.floats()
JSONABLE = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=30,
)
OBJECTS = st.dictionaries(KEYS, JSONABLE, max_size=6)


class AnyObject(BaseModel):
    """A workflow payload model that takes any object, so only plain-JSON checks decide."""

    model_config = ConfigDict(extra="allow")


def _storable(text: str) -> bool:
    """What PostgreSQL's jsonb takes: no NUL escape, valid UTF-8 once unescaped."""
    try:
        json.loads(text, object_pairs_hook=dict)
        json.dumps(json.loads(text), ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return False
    return "\\u0000" not in text


@given(OBJECTS)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_a_payload_is_accepted_exactly_or_refused_as_invalid(payload: dict[Any, Any]) -> None:
    try:
        _model, text = validate(AnyObject, payload, max_bytes=1 << 20)
    except InvalidPayload:
        return
    assert json.loads(text) == payload  # the same keys (all strings) and values
    assert _storable(text)


@given(JSONABLE)
def test_anything_but_an_object_is_refused_as_invalid(value: Any) -> None:
    assume(not isinstance(value, dict))
    with pytest.raises(InvalidPayload):
        validate(AnyObject, value, max_bytes=1 << 20)


@pytest.mark.parametrize("depth", [50, 5_000, 100_000])
def test_a_deeply_nested_payload_is_refused_or_kept_never_a_crash(depth: int) -> None:
    nested: Any = []
    for _ in range(depth):
        nested = [nested]
    try:
        _model, text = validate(AnyObject, {"deep": nested}, max_bytes=1 << 30)
    except InvalidPayload as exc:
        assert "nested" in str(exc)
    else:
        assert json.loads(text) == {"deep": nested}


@pytest.mark.parametrize("text", ["\ud800", "ok\udfff", "\x00", "a\x00b"])
def test_text_postgresql_cannot_store_is_refused_in_a_payload(text: str) -> None:
    with pytest.raises(InvalidPayload):
        validate(AnyObject, {"tag": text}, max_bytes=1024)
    with pytest.raises(InvalidPayload):
        validate(AnyObject, {text: 1}, max_bytes=1024)


@given(OBJECTS)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_a_state_value_is_accepted_exactly_or_refused_as_invalid(value: dict[Any, Any]) -> None:
    try:
        text = check_value(value)
    except InvalidPayload:
        return
    assert json.loads(text) == value
    assert _storable(text)


@given(JSONABLE)
def test_a_state_value_that_is_not_an_object_is_refused(value: Any) -> None:
    assume(not isinstance(value, dict))
    with pytest.raises(InvalidPayload):
        check_value(value)


@given(st.text() | st.integers() | st.none() | st.binary())
def test_a_state_key_is_kept_as_given_or_refused_as_invalid(key: Any) -> None:
    try:
        checked = check_key(key)
    except InvalidPayload:
        return
    assert checked == key and isinstance(checked, str) and checked.strip()
    assert "\x00" not in checked
    checked.encode("utf-8")  # Redis and PostgreSQL both take it


# --- settings -------------------------------------------------------------------------

VARIABLES = sorted(ENV_PREFIX + name.upper() for name in Settings.model_fields)
URL_VARIABLES = [v for v in VARIABLES if v.endswith(("_URL", "_URLS"))]
# A check across two settings names the other one (a provider URL without its keys).
RELATED = {"ORCH_LLM_BASE_URL": "ORCH_LLM_API_KEYS",
           "ORCH_LLM_FALLBACK_BASE_URL": "ORCH_LLM_FALLBACK_API_KEYS"}
# What an environment variable can hold: any text but NUL and lone surrogates.
ENV_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))


@pytest.fixture(autouse=True)
def _no_orch_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def _load(variable: str, value: str) -> Settings | InvalidSettings:
    os.environ[variable] = value
    try:
        return load_settings()
    except InvalidSettings as exc:
        return exc
    finally:
        del os.environ[variable]


@given(st.sampled_from(VARIABLES), ENV_TEXT)
@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
def test_any_text_in_any_variable_loads_or_names_that_variable(variable: str,
                                                               value: str) -> None:
    loaded = _load(variable, value)
    if isinstance(loaded, InvalidSettings):
        assert loaded.variable in (variable, RELATED.get(variable))
        assert loaded.variable in str(loaded)


# A planted password: distinctive, with the characters that break naive URL parsing.
PASSWORDS = st.builds(lambda tail: f"Pw-{tail}", st.text(
    string.ascii_letters + string.digits + "@:/?#[]%,;= ", min_size=4, max_size=16))
SCHEMES = st.sampled_from(["redis", "rediss", "postgresql", "postgresql+psycopg",
                           "postgres", "mysql", "http", "https", "unix", ""])


@given(st.sampled_from(URL_VARIABLES), SCHEMES, st.sampled_from(["", "app", "user"]),
       PASSWORDS, ENV_TEXT, ENV_TEXT)
@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
def test_a_refused_url_never_shows_its_password(variable: str, scheme: str, user: str,
                                                password: str, host: str, tail: str) -> None:
    sep = "://" if scheme else ""
    value = f"{scheme}{sep}{user}:{password}@{host}{tail}"
    loaded = _load(variable, value)
    if isinstance(loaded, InvalidSettings):
        assert password not in str(loaded)
        assert password.strip() not in str(loaded)


@given(st.sampled_from(VARIABLES), st.text(string.digits + "-.e", max_size=8))
def test_numbers_in_any_variable_load_or_name_it(variable: str, value: str) -> None:
    loaded = _load(variable, value)
    if isinstance(loaded, InvalidSettings):
        assert loaded.variable in (variable, RELATED.get(variable))
    else:
        for name in Settings.model_fields:
            field = getattr(loaded, name)
            if isinstance(field, float):
                assert not math.isnan(field)


FLOAT_VARIABLES = [ENV_PREFIX + name.upper() for name, field in Settings.model_fields.items()
                   if field.annotation is float]


@pytest.mark.parametrize("variable", FLOAT_VARIABLES)
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "infinity"])
def test_seconds_that_are_not_a_finite_number_are_refused(variable: str, value: str) -> None:
    loaded = _load(variable, value)
    assert isinstance(loaded, InvalidSettings) and loaded.variable == variable
