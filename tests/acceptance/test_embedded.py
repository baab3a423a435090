"""Embedded mode: with no service URLs, the fleet brings its own Redis and PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import orchestrator
from config import Settings
from orchestrator.devstack.fleet import local_fleet
from orchestrator.invocation import InvocationStatus


@pytest.mark.timeout(180)
def test_embedded_mode_boots_and_runs_a_workflow(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", workflow_modules=["orchestrator.agents"],
                        agents_concurrency=1, llm_worker_concurrency=4,
                        tools_worker_concurrency=2)
    assert settings.redis_url is None and settings.database_url is None
    with local_fleet(settings) as fleet:
        assert fleet.settings.redis_url and fleet.settings.database_url
        assert len(fleet.embedded) == 2
        invocation = orchestrator.wait(orchestrator.submit(
            "support-triage",
            {"customer_id": "emb-1", "ticket_id": "T-1", "message": "refund please"}),
            timeout=90)
        assert invocation.status is InvocationStatus.SUCCEEDED, invocation.error
        pids = [w.pid for w in fleet.workers]
    for pid in pids:  # every worker stopped with the fleet
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
