"""Listing invocations: by status, workflow and age, newest first (steps not loaded)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, text

from orchestrator.invocation import Invocation, InvocationStatus
from orchestrator.store.invocations import to_invocation
from orchestrator.store.reconnect import reconnecting

MAX_LIMIT = 10_000


class InvocationListing:
    def __init__(self, engine: Engine) -> None:
        self.auto = engine.execution_options(isolation_level="AUTOCOMMIT")

    @reconnecting
    def invocations(self, *, status: InvocationStatus | None = None,
                    workflow: str | None = None, since: datetime | None = None,
                    limit: int = 100) -> list[Invocation]:
        """Invocations matching every filter given, newest first, at most ``limit``
        (1..10000). Their ``steps`` are empty: ``get`` loads one whole."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
        where = ["TRUE"]
        params: dict[str, object] = {"n": limit}
        if status is not None:
            where.append("status = :status")
            params["status"] = status.value
        if workflow is not None:
            where.append("workflow = :workflow")
            params["workflow"] = workflow
        if since is not None:
            where.append("created_at >= :since")
            params["since"] = since
        # The conditions are fixed text chosen above; every value is a bound parameter.
        with self.auto.connect() as conn:
            rows = conn.execute(text(
                f"SELECT * FROM invocations WHERE {' AND '.join(where)} "
                "ORDER BY created_at DESC LIMIT :n"), params).mappings().all()
        return [to_invocation(row, []) for row in rows]
