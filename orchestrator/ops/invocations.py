"""Acting on one invocation: cancel it, replay it; and looking at many.

- **cancel**: the in-flight hash is marked first, so from that moment every delivery of
  its steps stops at its claim (a retry waiting in its countdown too: it comes back,
  finds the mark and ends); then PostgreSQL records ``cancelled`` with the reason and the
  records of the steps that finished.
- **replay**: a ``failed`` or ``cancelled`` invocation goes back to ``queued`` under the
  same id and runs again from its first step that did not succeed, with the outputs of
  the steps that did (from the in-flight hash, or from PostgreSQL's step rows when the hash
  has expired). Its steps' attempts start again from one; ``replays`` counts how often.
"""

from __future__ import annotations

import getpass
import socket
from datetime import datetime
from typing import Any

from orchestrator.errors import InvalidPayload, InvalidState, UnknownInvocation
from orchestrator.execution.dispatch import dispatch
from orchestrator.invocation import Invocation, InvocationStatus, StepRecord, StepStatus
from orchestrator.store.listing import InvocationListing
from orchestrator.subsystems import Subsystems
from orchestrator.workflow import registry


def operator() -> str:
    """Who acts: ``user@host``, for reasons recorded on invocations and queues."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _found(sub: Subsystems, invocation_id: str) -> Invocation:
    found = sub.store.get(invocation_id)
    if found is None:
        raise UnknownInvocation(f"no invocation with id {invocation_id!r}")
    return found


def cancel(sub: Subsystems, invocation_id: str, *, reason: str | None = None) -> Invocation:
    """Cancel a queued or running invocation; returns it as it then stands.

    Raises ``UnknownInvocation`` for an id never issued, ``InvalidState`` for one that
    has ended (succeeded, failed or cancelled) already.
    """
    found = _found(sub, invocation_id)
    if found.finished:
        raise InvalidState(f"invocation {invocation_id} has {found.status.value} already: "
                           "there is nothing to cancel")
    why = reason or f"cancelled by {operator()}"
    sub.claims.cancel(invocation_id, why)  # first: no further step starts
    _, records, _ = sub.claims.snapshot(invocation_id)
    sub.store.cancel(invocation_id, reason=why,
                     steps=[{"idx": i, **r} for i, r in sorted(records.items())])
    return _found(sub, invocation_id)


def _record(step: StepRecord) -> dict[str, Any]:
    def ms(at: datetime | None) -> int | None:
        return None if at is None else int(at.timestamp() * 1000)

    return {"name": step.name, "kind": step.kind, "status": step.status.value,
            "attempts": step.attempts, "output": step.output, "error": step.error,
            "fallback": step.fallback, "pt": step.tokens.prompt, "ct": step.tokens.completion,
            "started_ms": ms(step.started_at), "finished_ms": ms(step.finished_at)}


def replay(sub: Subsystems, invocation_id: str) -> str:
    """Run a failed or cancelled invocation again from its first step that did not
    succeed; returns its id (unchanged).

    Raises ``UnknownInvocation``, or ``InvalidState`` when it is queued, running or
    succeeded.
    """
    sub.load_workflows()
    found = _found(sub, invocation_id)
    if found.status not in (InvocationStatus.FAILED, InvocationStatus.CANCELLED):
        raise InvalidState(f"invocation {invocation_id} is {found.status.value}: only a "
                           "failed or cancelled invocation can be replayed")
    workflow = registry.get(found.workflow)
    done = {s.index: _record(s) for s in found.steps if s.status is StepStatus.DONE}
    start = sub.claims.reopen(invocation_id, done)
    if not sub.store.reopen(invocation_id):
        raise InvalidState(f"invocation {invocation_id} changed meanwhile; look again")
    _, records, _ = sub.claims.snapshot(invocation_id)
    context = {"invocation_id": invocation_id, "workflow": workflow.name,
               "payload": found.payload,
               "outputs": {workflow.step_at(i).name: records[i]["output"]
                           for i in sorted(records) if i < start}}
    dispatch(sub.runtime.producer, workflow, context, start=start)
    return invocation_id


def invocations(sub: Subsystems, *, status: InvocationStatus | str | None = None,
                workflow: str | None = None, since: datetime | None = None,
                limit: int = 100) -> list[Invocation]:
    """Invocations matching every filter, newest first (steps not loaded: ``get`` one for
    them). Raises ``InvalidPayload`` for an unknown status or a limit out of 1..10000."""
    try:
        wanted = None if status is None else InvocationStatus(status)
        return InvocationListing(sub.runtime.engine).invocations(
            status=wanted, workflow=workflow, since=since, limit=limit)
    except ValueError as exc:
        choices = ", ".join(s.value for s in InvocationStatus)
        raise InvalidPayload(f"{exc} (statuses: {choices})") from None
