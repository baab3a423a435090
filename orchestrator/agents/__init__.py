"""Reference agents, registered by default (``ORCH_WORKFLOW_MODULES=orchestrator.agents``)."""

from orchestrator.agents import ask, pipeline, support_triage

__all__ = ["ask", "pipeline", "support_triage"]
