"""Turning invocations and figures into JSON and rich tables."""

from __future__ import annotations

import math
from typing import Any

from orchestrator.invocation import Invocation


def invocation_json(invocation: Invocation) -> dict[str, Any]:
    """The invocation as JSON-ready data (timestamps ISO 8601)."""
    return {
        "id": invocation.id,
        "workflow": invocation.workflow,
        "status": invocation.status.value,
        "output": invocation.output,
        "error": invocation.error,
        "tokens": {"prompt": invocation.tokens.prompt,
                   "completion": invocation.tokens.completion,
                   "total": invocation.tokens.total},
        "created_at": invocation.created_at.isoformat(),
        "finished_at": invocation.finished_at.isoformat() if invocation.finished_at else None,
        "latency_s": invocation.latency,
        "steps": [
            {"name": s.name, "kind": s.kind, "status": s.status.value, "attempts": s.attempts,
             "fallback": s.fallback, "duration_s": s.duration, "error": s.error}
            for s in invocation.steps
        ],
    }


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by nearest rank, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]
