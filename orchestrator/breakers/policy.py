"""What a breaker is configured with, and what it reports: plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.errors import ToolDefinitionError


@dataclass(frozen=True)
class BreakerPolicy:
    """When to open (``threshold`` of the last ``window`` calls failed, at least
    ``min_calls`` seen) and how long to stay open before one probe (``reset_timeout``)."""

    window: int = 20
    min_calls: int = 10
    threshold: float = 0.5
    reset_timeout: float = 10.0
    probe_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.window <= 0 or not 0 < self.min_calls <= self.window:
            raise ToolDefinitionError(
                f"breaker window must be positive and min_calls in 1..window, got "
                f"window={self.window} min_calls={self.min_calls}")
        if not 0 < self.threshold <= 1:
            raise ToolDefinitionError(f"breaker threshold must be in (0, 1], got {self.threshold}")
        if self.reset_timeout <= 0 or self.probe_timeout <= 0:
            raise ToolDefinitionError("breaker reset_timeout and probe_timeout must be positive")


@dataclass(frozen=True)
class BreakerStatus:
    name: str
    state: str
    forced: bool
    failures: int
    calls: int
    next_probe_in: float | None

    @property
    def error_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0
