"""Calling a tool: its own timeout, errors classified, the fallback as the last word."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pybreaker

from orchestrator import runtime
from orchestrator.errors import StepFailed, TransientStepError
from orchestrator.telemetry import count
from orchestrator.tools.registry import Tool, tools

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolOutcome:
    output: Any
    fallback: bool = False


def _call_http(tool: Tool, payload: dict[str, Any]) -> Any:
    rt = runtime.current()
    url = f"{rt.settings.tools_endpoint}{tool.http_path}"
    timeout = httpx.Timeout(tool.timeout.read, connect=tool.timeout.connect)
    try:
        response = rt.http.post(url, json=payload, timeout=timeout)
    except httpx.TimeoutException:
        raise TransientStepError(
            f"tool {tool.name!r} timed out after {tool.timeout.read:.1f}s"
        ) from None
    except httpx.HTTPError as exc:
        raise TransientStepError(f"tool {tool.name!r}: {type(exc).__name__}: {exc}") from None
    if response.status_code >= 500 or response.status_code == 429:
        raise TransientStepError(f"tool {tool.name!r}: HTTP {response.status_code}")
    if response.status_code >= 400:
        raise StepFailed(f"tool {tool.name!r} refused the input: HTTP {response.status_code} "
                         f"{response.text[:200]}")
    try:
        return response.json()
    except ValueError:
        raise TransientStepError(f"tool {tool.name!r} answered with non-JSON") from None


def _call_fn(tool: Tool, payload: dict[str, Any]) -> Any:
    """Run a callable tool under its read timeout. A Python call cannot be cancelled, so
    one that overruns keeps its thread until it returns, but the step stops waiting."""
    assert tool.fn is not None
    future = runtime.current().tool_threads.submit(tool.fn, payload)
    try:
        return future.result(timeout=tool.timeout.read)
    except concurrent.futures.TimeoutError:
        raise TransientStepError(
            f"tool {tool.name!r} timed out after {tool.timeout.read:.1f}s") from None
    except (StepFailed, TransientStepError):
        raise
    except Exception as exc:
        raise TransientStepError(f"tool {tool.name!r}: {type(exc).__name__}: {exc}") from exc


def _call(tool: Tool, payload: dict[str, Any]) -> Any:
    if tool.fn is not None:
        return _call_fn(tool, payload)
    return _call_http(tool, payload)


def invoke(name: str, payload: dict[str, Any], *, last_attempt: bool) -> ToolOutcome:
    """Call tool ``name`` through its fleet-wide breaker.

    The fallback answers at once while the breaker is open, and after a transient
    failure on the last attempt. Raises ``UnknownTool``, ``StepFailed`` (the tool
    refused the input) or, before the last attempt, ``TransientStepError`` (retried).
    """
    tool = tools.get(name)
    rt = runtime.current()
    breaker = rt.breakers.get(tool.name, tool.breaker)

    def timed_call() -> Any:
        started = time.monotonic()
        try:
            return _call(tool, payload)
        except TransientStepError:
            # Worker time lost to a failing tool: what breakers exist to save.
            count(rt.redis, f"tool_blocked_ms:{tool.name}",
                  int((time.monotonic() - started) * 1000))
            raise

    try:
        return ToolOutcome(breaker.call(
            timed_call, is_failure=lambda exc: isinstance(exc, TransientStepError)))
    except pybreaker.CircuitBreakerError:
        return ToolOutcome(tool.fallback(payload), fallback=True)
    except TransientStepError as exc:
        if not last_attempt:
            raise
        log.warning("tool %s failed on its last attempt (%s); serving its fallback", name, exc)
        return ToolOutcome(tool.fallback(payload), fallback=True)
