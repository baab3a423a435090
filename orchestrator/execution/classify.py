"""One classification of what goes wrong in a step delivery: transient or permanent.

Transient: what a later attempt may not meet again. Connection errors and timeouts of
Redis, PostgreSQL, HTTP and the OS, ``Backpressure`` from the state layer,
``VersionConflict`` after ``state.update``'s own retries, and ``TransientStepError``
(429s and 5xx of providers and tools, tool timeouts). These are retried with backoff and
jitter, up to ``ORCH_STEP_MAX_RETRIES``.

Permanent: the step's own code raising anything else, or returning output that is not
plain JSON. The invocation fails at once, with an error naming the step.
"""

from __future__ import annotations

import httpx
import redis.exceptions
import sqlalchemy.exc

from orchestrator.errors import Backpressure, TransientStepError, VersionConflict

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientStepError,
    Backpressure,
    VersionConflict,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,
    httpx.TransportError,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is worth another attempt (see the module docstring)."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    # A driver error whose connection was invalidated is an outage, whatever its class.
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and bool(exc.connection_invalidated)


def retry_after(exc: BaseException) -> float | None:
    """The delay the error asks for (a provider's retry-after, backpressure's), if any."""
    if isinstance(exc, TransientStepError):
        return exc.retry_after
    if isinstance(exc, Backpressure):
        return exc.retry_after
    return None


def describe(exc: BaseException) -> str:
    """A one-line description for an error message."""
    if isinstance(exc, TransientStepError | Backpressure | VersionConflict):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
