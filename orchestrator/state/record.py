"""The state record value object and the checks on keys and values."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import InvalidPayload
from orchestrator.payload import plain_json_problem

MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class Record:
    """A state value at a version; version 0 means "never written"."""

    key: str
    value: dict[str, Any]
    version: int


@dataclass(frozen=True, slots=True)
class Basis:
    """What ``update`` applies its function to: a record's version and its value's JSON
    text exactly as stored (empty for a key never written), as read, as a conflict reply
    reported it, or as this process last wrote it. The compare-and-set of an update
    checks both, so a write applied to a basis the record no longer holds is refused."""

    version: int
    text: bytes | str

    @classmethod
    def of(cls, record: Record | None) -> Basis:
        return cls(0, "") if record is None else cls(record.version, encode(record.value))

    def value(self) -> dict[str, Any]:
        """A new copy of the value each call (``fn`` may change what it is given)."""
        return json.loads(self.text) if self.text else {}


def encode(value: dict[str, Any]) -> str:
    """A value's stored JSON text (compact; the write-back cache and PostgreSQL loads
    write it alike)."""
    return json.dumps(value, separators=(",", ":"))


def check_key(key: Any) -> str:
    """``key`` if it can name a state record; raises ``InvalidPayload`` for anything but
    non-blank text of at most ``MAX_KEY_LENGTH`` characters that Redis and PostgreSQL both
    store (no NUL, no lone surrogate)."""
    if not isinstance(key, str) or not key.strip():
        raise InvalidPayload("state key must be a non-empty string, e.g. 'customer:42'")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidPayload(f"state key is {len(key)} characters, over {MAX_KEY_LENGTH}")
    problem = plain_json_problem(key, "state key")
    if problem:
        raise InvalidPayload(problem)
    return key


def check_value(value: Any) -> str:
    """The value's JSON text; raises ``InvalidPayload`` unless a plain JSON object that
    reads back equal and PostgreSQL can store (see ``plain_json_problem``)."""
    if not isinstance(value, dict):
        raise InvalidPayload(f"state value must be a JSON object, got {type(value).__name__}")
    problem = plain_json_problem(value, "state value")
    if problem:
        raise InvalidPayload(problem)
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidPayload(f"state value is not plain JSON: {exc}") from None
