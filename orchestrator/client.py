"""The producer API: ``submit``, ``wait``, ``get``, ``cancel``, ``replay``, ``invocations``."""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from orchestrator import runtime, subsystems
from orchestrator.errors import InvalidPayload, InvocationTimeout, UnknownInvocation
from orchestrator.execution.dispatch import dispatch
from orchestrator.ids import new_invocation_id
from orchestrator.invocation import Invocation, InvocationStatus
from orchestrator.ops import invocations as ops
from orchestrator.payload import validate
from orchestrator.store.invocations import step_from_record
from orchestrator.workflow import registry

MAX_IDEMPOTENCY_KEY = 255

P = ParamSpec("P")
R = TypeVar("R")


def _reaching_services(fn: Callable[P, R]) -> Callable[P, R]:
    """Producer calls raise ``ServiceUnavailable`` (an outage) or ``ServiceMisconfigured``
    (credentials, host, database) naming the variable, never a raw driver error."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with runtime.reaching():
            return fn(*args, **kwargs)

    return wrapper


@_reaching_services
def submit(
    workflow: str, payload: dict[str, Any], *, idempotency_key: str | None = None
) -> str:
    """Start ``workflow`` with ``payload``; returns the invocation id.

    With an ``idempotency_key`` used before, returns that invocation's id and starts
    nothing. Raises ``UnknownWorkflow``, ``InvalidPayload`` or ``PayloadTooLarge``
    before anything is written or enqueued, and ``Backpressure`` (with ``retry_after``)
    when a queue the workflow needs is over its threshold; nothing is written then either.
    Redis or PostgreSQL out of reach raises ``ServiceUnavailable`` (refused, timed out) or
    ``ServiceMisconfigured`` (credentials refused, unknown host or database), naming the
    ``ORCH_*`` variable; nothing is written then either.
    """
    sub = subsystems.current()
    sub.load_workflows()
    definition = registry.get(workflow)
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str)
        or not idempotency_key.strip()
        or len(idempotency_key) > MAX_IDEMPOTENCY_KEY
    ):
        raise InvalidPayload(
            f"idempotency_key must be a non-empty string of at most {MAX_IDEMPOTENCY_KEY} "
            "characters"
        )
    _model, payload_json = validate(
        definition.payload, payload, max_bytes=sub.settings.max_payload_bytes
    )
    sub.admission.check({step.kind.queue for step in definition.steps})
    invocation_id, existing = sub.store.create(
        invocation_id=new_invocation_id(),
        workflow=definition.name,
        payload_json=payload_json,
        step_count=len(definition.steps),
        idempotency_key=idempotency_key,
    )
    claims = sub.claims
    # Only a repeated idempotency key can reach an existing invocation, so only keyed
    # submits need to agree on who publishes its chain.
    keyed = idempotency_key is not None
    if keyed and not claims.claim_dispatch(invocation_id):
        return invocation_id  # a submit with this key published it, or is publishing it
    if existing is not None and existing is not InvocationStatus.QUEUED:
        claims.mark_dispatched(invocation_id)
        return invocation_id
    context = {
        "invocation_id": invocation_id,
        "workflow": definition.name,
        "payload": json.loads(payload_json),
        "outputs": {},
    }
    try:
        dispatch(sub.runtime.producer, definition, context)
    except Exception:
        # Nothing was enqueued: leave nothing behind, so a retry with this key works.
        # The row goes first: with the broker's Redis away (restarting) the claim cannot
        # be forgotten, and a retry finding the row and that claim would take the
        # invocation for one being published and return it unpublished.
        try:
            if existing is None:
                sub.store.delete(invocation_id)
        finally:
            if keyed:
                with contextlib.suppress(Exception):  # stale after 30 s anyway
                    claims.forget(invocation_id)
        raise
    if keyed:
        claims.mark_dispatched(invocation_id)
    return invocation_id


@_reaching_services
def get(invocation_id: str) -> Invocation:
    """The invocation as it stands, with the steps finished so far.

    Raises ``UnknownInvocation`` for an id never issued.
    """
    sub = subsystems.current()
    found = sub.store.get(invocation_id)
    if found is None:
        raise UnknownInvocation(f"no invocation with id {invocation_id!r}")
    if found.finished:
        return found
    _dispatched, records, running = sub.claims.snapshot(invocation_id)
    if not records and not running:
        return found
    steps = tuple(step_from_record(i, r) for i, r in sorted(records.items()))
    return replace(found, status=InvocationStatus.RUNNING, steps=steps,
                   started_at=steps[0].started_at if steps else found.started_at)


@_reaching_services
def wait(invocation_id: str, timeout: float | None = None) -> Invocation:
    """Block until the invocation succeeded or failed, and return it.

    Raises ``InvocationTimeout`` after ``timeout`` seconds (None: wait for ever) and
    ``UnknownInvocation`` for an id never issued.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.01
    while True:
        invocation = get(invocation_id)
        if invocation.finished:
            return invocation
        if deadline is not None and time.monotonic() >= deadline:
            raise InvocationTimeout(
                f"invocation {invocation_id} still {invocation.status.value} after {timeout}s"
            )
        pause = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
        time.sleep(pause)
        delay = min(delay * 1.5, 0.25)


@_reaching_services
def cancel(invocation_id: str, *, reason: str | None = None) -> Invocation:
    """Cancel a queued or running invocation: no further step starts, a step waiting in
    a retry countdown stops at its next delivery; the status becomes ``cancelled`` with
    ``reason`` (default: who cancelled it). Returns the invocation.

    Raises ``UnknownInvocation`` for an id never issued, ``InvalidState`` for one that
    has ended already.
    """
    return ops.cancel(subsystems.current(), invocation_id, reason=reason)


@_reaching_services
def replay(invocation_id: str) -> str:
    """Run a ``failed`` or ``cancelled`` invocation again from its first step that did not
    succeed, reusing the outputs of the steps that did (same id, back to ``queued``).

    Raises ``UnknownInvocation``, or ``InvalidState`` for any other status.
    """
    return ops.replay(subsystems.current(), invocation_id)


@_reaching_services
def invocations(*, status: InvocationStatus | str | None = None, workflow: str | None = None,
                since: datetime | None = None, limit: int = 100) -> list[Invocation]:
    """Invocations matching every filter given, newest first, at most ``limit``. Their
    ``steps`` are not loaded (``get`` one for them). Raises ``InvalidPayload`` for an
    unknown status or a limit outside 1..10000."""
    return ops.invocations(subsystems.current(), status=status, workflow=workflow,
                           since=since, limit=limit)
