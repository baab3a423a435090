"""Circuit breakers whose state the whole fleet shares (tools and LLM providers use them)."""

from orchestrator.breakers.fleet import Breakers, FleetBreaker, known_breakers, recent_events
from orchestrator.breakers.policy import BreakerPolicy, BreakerStatus

__all__ = ["BreakerPolicy", "BreakerStatus", "Breakers", "FleetBreaker", "known_breakers",
           "recent_events"]
