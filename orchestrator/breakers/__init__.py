"""Circuit breakers whose state the whole fleet shares (tools and LLM providers use them).

The rules live behind :class:`BreakerStore`: :class:`RedisBreakerStore` for the fleet,
:class:`MemoryBreakerStore` for one process (tests).
"""

from orchestrator.breakers.fleet import Breakers, FleetBreaker, known_breakers, recent_events
from orchestrator.breakers.memory_store import MemoryBreakerStore
from orchestrator.breakers.policy import BreakerPolicy, BreakerStatus
from orchestrator.breakers.redis_store import RedisBreakerStore
from orchestrator.breakers.store import Admit, BreakerStore, Decision, Outcome

__all__ = ["Admit", "BreakerPolicy", "BreakerStatus", "BreakerStore", "Breakers", "Decision",
           "FleetBreaker", "MemoryBreakerStore", "Outcome", "RedisBreakerStore",
           "known_breakers", "recent_events"]
