"""Calling a tool: on its own threads, under its own timeout, errors classified, the
fallback as the last word."""

from __future__ import annotations

import concurrent.futures
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pybreaker
import redis

from orchestrator.breakers import Breakers, FleetBreaker
from orchestrator.errors import StepFailed, TransientStepError
from orchestrator.telemetry import count
from orchestrator.tools.pools import ToolPool, ToolPools
from orchestrator.tools.registry import Tool, tools

log = logging.getLogger(__name__)
# How often a waiting call looks at its breaker: the most an open breaker leaves a
# worker waiting on a call already in flight.
WATCH_INTERVAL = 0.1


@dataclass(frozen=True)
class ToolOutcome:
    output: Any
    fallback: bool = False


class Abandoned(Exception):
    """The tool's breaker opened while this call waited: its answer is no longer awaited."""


class ToolInvoker:
    """Calls tools for one process, each on its own bounded pool of threads
    (:mod:`orchestrator.tools.pools`) and behind its fleet-wide breaker: HTTP tools
    through the process's pooled client, callables as they are."""

    def __init__(self, *, breakers: Breakers, http: httpx.Client, endpoint: str,
                 pools: ToolPools, telemetry: redis.Redis) -> None:
        self.breakers = breakers
        self.http = http
        self.endpoint = endpoint
        self.pools = pools
        self.telemetry = telemetry

    def _call_http(self, tool: Tool, payload: dict[str, Any]) -> Any:
        url = f"{self.endpoint}{tool.http_path}"
        timeout = httpx.Timeout(tool.timeout.read, connect=tool.timeout.connect)
        try:
            response = self.http.post(url, json=payload, timeout=timeout)
        except httpx.TimeoutException:
            raise TransientStepError(
                f"tool {tool.name!r} timed out after {tool.timeout.read:.1f}s"
            ) from None
        except httpx.HTTPError as exc:
            raise TransientStepError(
                f"tool {tool.name!r}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientStepError(f"tool {tool.name!r}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise StepFailed(f"tool {tool.name!r} refused the input: HTTP "
                             f"{response.status_code} {response.text[:200]}")
        try:
            return response.json()
        except ValueError:
            raise TransientStepError(f"tool {tool.name!r} answered with non-JSON") from None

    def _run(self, tool: Tool, payload: dict[str, Any]) -> Any:
        """The tool itself, errors classified (runs on a tool thread)."""
        if tool.fn is None:
            return self._call_http(tool, payload)
        try:
            return tool.fn(payload)
        except (StepFailed, TransientStepError):
            raise
        except Exception as exc:
            raise TransientStepError(
                f"tool {tool.name!r}: {type(exc).__name__}: {exc}") from exc

    def _call(self, tool: Tool, payload: dict[str, Any], breaker: FleetBreaker) -> Any:
        """Run the tool on one of its threads and wait for it, at most its timeout, and
        only while its breaker stays closed: once the fleet has seen the tool fail, calls
        already in flight stop waiting too. The thread of an abandoned call runs on until
        the tool returns (hung, counted); the worker's slot is free at once.

        Raises ``TransientStepError`` on a timeout, and at once when all the tool's
        threads are hung."""
        pool = self.pools.get(tool.name, tool.threads)
        future = pool.submit(self._run, tool, payload)
        limit = tool.timeout.read + (tool.timeout.connect if tool.is_http else 0.0)
        deadline = time.monotonic() + limit
        while True:
            remaining = deadline - time.monotonic()
            try:
                return future.result(timeout=max(0.0, min(WATCH_INTERVAL, remaining)))
            except concurrent.futures.TimeoutError:
                if remaining <= WATCH_INTERVAL:
                    started = self._abandon(tool, pool, future)
                    waited = "" if started else (
                        f" waiting for one of its {pool.size} threads ({pool.hung} hung)")
                    raise TransientStepError(
                        f"tool {tool.name!r} timed out after {limit:.1f}s{waited}") from None
                if breaker.is_open():
                    self._abandon(tool, pool, future)
                    raise Abandoned(tool.name) from None

    def _abandon(self, tool: Tool, pool: ToolPool, future: concurrent.futures.Future[Any],
                 ) -> bool:
        """Stop waiting for a call; True when it had started (its thread may now hang)."""
        if not pool.abandon(future):
            return not future.cancelled()
        count(self.telemetry, f"tool_hung_threads:{tool.name}")
        log.warning("tool %s: a call outlived its timeout; its thread is left running "
                    "(%d of the tool's %d threads hung)", tool.name, pool.hung, pool.size)
        return True

    def invoke(self, name: str, payload: dict[str, Any], *, last_attempt: bool) -> ToolOutcome:
        """Call tool ``name`` through its fleet-wide breaker.

        The fallback answers at once while the breaker is open, and after a transient
        failure on the last attempt. Raises ``UnknownTool``, ``StepFailed`` (the tool
        refused the input) or, before the last attempt, ``TransientStepError`` (retried).
        """
        tool = tools.get(name)
        breaker = self.breakers.get(tool.name, tool.breaker)

        def timed_call() -> Any:
            started = time.monotonic()
            try:
                return self._call(tool, payload, breaker)
            except (TransientStepError, Abandoned):
                # Worker time lost to a failing tool: what breakers exist to save.
                count(self.telemetry, f"tool_blocked_ms:{tool.name}",
                      int((time.monotonic() - started) * 1000))
                raise

        try:
            return ToolOutcome(breaker.call(
                timed_call, is_failure=lambda exc: isinstance(exc, TransientStepError)))
        except (pybreaker.CircuitBreakerError, Abandoned):
            return ToolOutcome(tool.fallback(payload), fallback=True)
        except TransientStepError as exc:
            if not last_attempt:
                raise
            log.warning("tool %s failed on its last attempt (%s); serving its fallback",
                        name, exc)
            return ToolOutcome(tool.fallback(payload), fallback=True)
