"""Reference agents, registered by default (``ORCH_WORKFLOW_MODULES=orchestrator.agents``)."""

from orchestrator.agents import support_triage

__all__ = ["support_triage"]
