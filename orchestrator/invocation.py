"""What producers get back: an invocation and its steps, as frozen value objects."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Invocation", "InvocationStatus", "StepRecord", "StepStatus", "TokenUsage"]


class InvocationStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Terminal: succeeded, failed or cancelled."""
        return self in (InvocationStatus.SUCCEEDED, InvocationStatus.FAILED,
                        InvocationStatus.CANCELLED)


class StepStatus(enum.StrEnum):
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class TokenUsage:
    prompt: int = 0
    completion: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion


@dataclass(frozen=True)
class StepRecord:
    """One step's outcome: ``fallback`` is true when a tool's fallback answered."""

    index: int
    name: str
    kind: str
    status: StepStatus
    attempts: int
    output: Any
    error: str | None
    fallback: bool
    tokens: TokenUsage
    started_at: datetime
    finished_at: datetime | None

    @property
    def duration(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class Invocation:
    """One run of a workflow. ``output`` is the last step's output once succeeded."""

    id: str
    workflow: str
    status: InvocationStatus
    payload: dict[str, Any]
    output: Any
    error: str | None
    steps: tuple[StepRecord, ...]
    tokens: TokenUsage
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    idempotency_key: str | None = None
    replays: int = 0
    replayed_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status.finished

    @property
    def latency(self) -> float | None:
        """Seconds from submit to finish, or None while unfinished."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.created_at).total_seconds()
