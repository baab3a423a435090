"""Reference agents, registered by default (``ORCH_WORKFLOW_MODULES=orchestrator.agents``)."""

from orchestrator.agents import pipeline, support_triage

__all__ = ["pipeline", "support_triage"]
