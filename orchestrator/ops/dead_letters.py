"""Dead letters: the failed invocations, each with its cause.

A cause is a short, bounded name for why an invocation failed, derived from its error
(the runner and the reconciler write those errors in fixed shapes), so dead letters can
be counted by cause in ``dlq list`` and in metrics without unbounded labels. A replayed
invocation is ``queued`` again, so it leaves the list.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from orchestrator.invocation import Invocation, InvocationStatus
from orchestrator.ops.invocations import invocations
from orchestrator.subsystems import Subsystems

# (pattern in the error, cause), first match wins.
_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), cause) for pattern, cause in (
        (r"worker died \d+ times", "worker died"),
        (r"ran past its time limit", "time limit"),
        (r"not plain JSON", "invalid output"),
        (r"no provider answered|LLM provider", "provider outage"),
        (r"gave up after \d+ attempts", "retries exhausted"),
        (r"no progress for", "stalled"),
        (r"refused the input|refused the request", "refused input"),
        (r"no workflow named", "unknown workflow"),
    ))
_STEP_RAISED = re.compile(r"^step [^:]+: ([A-Za-z_][A-Za-z0-9_.]*)(?:: |$)")


def cause_of(error: str | None) -> str:
    """The cause of a failure, from its error message (see the module docstring)."""
    if not error:
        return "unknown"
    for pattern, cause in _CAUSES:
        if pattern.search(error):
            return cause
    raised = _STEP_RAISED.match(error)
    if raised:
        return f"step raised {raised.group(1)}"
    return "other"


@dataclass(frozen=True)
class DeadLetter:
    id: str
    workflow: str
    cause: str
    error: str | None
    failed_at: datetime | None

    @classmethod
    def of(cls, invocation: Invocation) -> DeadLetter:
        return cls(invocation.id, invocation.workflow, cause_of(invocation.error),
                   invocation.error, invocation.finished_at)

    def as_json(self) -> dict[str, object]:
        return {"id": self.id, "workflow": self.workflow, "cause": self.cause,
                "error": self.error,
                "failed_at": self.failed_at.isoformat() if self.failed_at else None}


def dead_letters(sub: Subsystems, *, workflow: str | None = None,
                 since: datetime | None = None, limit: int = 1000) -> list[DeadLetter]:
    """Failed invocations, newest first, with their causes."""
    return [DeadLetter.of(i) for i in invocations(
        sub, status=InvocationStatus.FAILED, workflow=workflow, since=since, limit=limit)]


def cause_counts(letters: list[DeadLetter]) -> dict[str, int]:
    """How many dead letters per cause, most frequent first."""
    return dict(Counter(letter.cause for letter in letters).most_common())
