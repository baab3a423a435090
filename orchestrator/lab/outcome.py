"""What became of one arrival in one profile."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Fate(enum.StrEnum):
    SUCCEEDED = "succeeded"
    DEGRADED = "degraded"
    FAILED = "failed"
    REFUSED = "refused"
    """Refused with a retry-after (Backpressure): nothing was written."""
    SUBMIT_ERROR = "submit_error"
    """The submit itself failed (broker or database out of reach): not accepted."""
    CANCELLED = "cancelled"
    LOST = "lost"
    """Accepted, not terminal at the deadline."""


@dataclass(frozen=True)
class Outcome:
    """``submitted``/``finished`` in lab seconds since the run started."""

    index: int
    customer_id: str
    fate: Fate
    submitted: float
    finished: float | None = None
    latency: float | None = None
    cause: str | None = None
    tool_seconds: float = 0.0
    retry_after: float | None = None

    @property
    def accepted(self) -> bool:
        return self.fate not in (Fate.REFUSED, Fate.SUBMIT_ERROR)

    @property
    def served(self) -> bool:
        return self.fate in (Fate.SUCCEEDED, Fate.DEGRADED)
