"""Payload checks at the boundary: plain JSON, under the size limit, valid for the model."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from orchestrator.errors import InvalidPayload, PayloadTooLarge


def encode(payload: Any) -> str:
    """The payload's canonical JSON text; raises ``InvalidPayload`` for non-JSON values."""
    if not isinstance(payload, dict):
        raise InvalidPayload(
            f"payload must be a JSON object (a dict), got {type(payload).__name__}"
        )
    try:
        return json.dumps(payload, allow_nan=False, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidPayload(f"payload is not plain JSON: {exc}") from None


# Deeper nesting is refused: no real payload needs it, and Python's json (RecursionError)
# and PostgreSQL's jsonb (stack depth) fail not far beyond, with errors of their own.
MAX_DEPTH = 100
# Lone UTF-16 surrogates: Python text may hold them, JSON escapes them, jsonb refuses them.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _plain(value: Any, depth: int) -> bool:
    """Whether ``value`` has none of :func:`plain_json_problem`'s problems: the same walk
    without building any message, as nearly every value passes (state updates and step
    outputs check every value they write)."""
    if depth > MAX_DEPTH:
        return False
    if isinstance(value, str):
        return "\x00" not in value and (value.isascii() or not _SURROGATE.search(value))
    if isinstance(value, dict):
        for key, item in value.items():
            if not (isinstance(key, str) and _plain(key, depth + 1)
                    and _plain(item, depth + 1)):
                return False
    elif isinstance(value, list | tuple):
        for item in value:
            if not _plain(item, depth + 1):
                return False
    return True


def plain_json_problem(value: Any, path: str, depth: int = 0) -> str | None:
    """What ``json.dumps`` would let through but plain JSON in PostgreSQL cannot hold:
    a non-string object key (``json`` silently turns ``1`` into ``"1"``), text with a
    NUL character (``jsonb`` rejects ``\\u0000``) or a lone surrogate (not Unicode), or
    nesting deeper than ``MAX_DEPTH``. None when there is none of these."""
    if depth == 0 and _plain(value, 0):
        return None
    if depth > MAX_DEPTH:
        return f"{path[:80]}... is nested more than {MAX_DEPTH} levels deep"
    if isinstance(value, str):
        if "\x00" in value:
            return f"{path} holds a NUL character (\\u0000), which PostgreSQL cannot store"
        if _SURROGATE.search(value):
            return (f"{path} holds a lone surrogate (\\ud800-\\udfff), which is not "
                    "Unicode text and PostgreSQL cannot store")
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a non-string key {key!r}: JSON object keys must be strings"
            found = (plain_json_problem(key, f"{path} key {key[:40]!r}", depth + 1)
                     or plain_json_problem(item, f"{path}.{key}", depth + 1))
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = plain_json_problem(item, f"{path}[{i}]", depth + 1)
            if found:
                return found
    return None


def check_keys(value: Any, path: str = "payload") -> None:
    """Raise ``InvalidPayload`` for a non-string key or NUL text (see
    :func:`plain_json_problem`)."""
    problem = plain_json_problem(value, path)
    if problem:
        raise InvalidPayload(problem)


def validate(model: type[BaseModel], payload: Any, *, max_bytes: int) -> tuple[BaseModel, str]:
    """Check ``payload`` and return (model instance, canonical JSON text).

    Raises ``PayloadTooLarge`` past ``max_bytes`` of JSON, ``InvalidPayload`` for values
    that are not plain JSON or do not match ``model`` (the message lists each problem).
    """
    check_keys(payload)
    text = encode(payload)
    size = len(text.encode())
    if size > max_bytes:
        raise PayloadTooLarge(
            f"payload is {size} bytes of JSON, over the limit of {max_bytes} "
            "(raise ORCH_MAX_PAYLOAD_BYTES, or pass a reference instead of the data)"
        )
    try:
        instance = model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidPayload(f"payload does not match {model.__name__}: {problems}") from None
    return instance, text
