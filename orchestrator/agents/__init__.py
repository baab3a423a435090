"""Reference agents, registered by default (``ORCH_WORKFLOW_MODULES=orchestrator.agents``)."""

from orchestrator.agents import ask, order_status, pipeline, support_triage

__all__ = ["ask", "order_status", "pipeline", "support_triage"]
