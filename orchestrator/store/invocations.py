"""The invocation store: every read and write of invocations and step records.

Each step delivery first *claims* its step row (an INSERT ... ON CONFLICT that also
takes over an expired lease), so a redelivered step whose record is done is skipped,
and two deliveries of one step never run at the same time. PostgreSQL's ``now()`` is
the only clock.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text

from orchestrator.invocation import (
    Invocation,
    InvocationStatus,
    StepRecord,
    StepStatus,
    TokenUsage,
)
from orchestrator.store.models import InvocationRow


class ClaimState(enum.Enum):
    CLAIMED = "claimed"
    DONE = "done"
    FAILED = "failed"
    BUSY = "busy"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Claim:
    state: ClaimState
    attempts: int = 0
    output: Any = None
    owner: str | None = None
    retry_after: float = 0.0


_CLAIM = text(
    """
    INSERT INTO invocation_steps
        (invocation_id, idx, name, kind, status, attempts, owner, lease_until, started_at)
    VALUES (:inv, :idx, :name, :kind, 'running', 1, :owner,
            now() + make_interval(secs => :lease), now())
    ON CONFLICT (invocation_id, idx) DO UPDATE
        SET attempts = invocation_steps.attempts + 1,
            owner = EXCLUDED.owner,
            lease_until = EXCLUDED.lease_until,
            started_at = now()
        WHERE invocation_steps.status = 'running'
          AND (invocation_steps.lease_until IS NULL
               OR invocation_steps.lease_until < now()
               OR invocation_steps.owner = :steal)
    RETURNING attempts
    """
)

_START_INVOCATION = text(
    "UPDATE invocations SET status = 'running', started_at = now() "
    "WHERE id = :inv AND status = 'queued'"
)

_STEP_STATE = text(
    """
    SELECT s.status, s.output, s.owner,
           GREATEST(EXTRACT(EPOCH FROM (s.lease_until - now())), 0) AS remaining,
           i.status AS invocation_status
    FROM invocation_steps s JOIN invocations i ON i.id = s.invocation_id
    WHERE s.invocation_id = :inv AND s.idx = :idx
    """
)

_FINISH_STEP = text(
    """
    UPDATE invocation_steps
       SET status = 'done', output = CAST(:output AS jsonb), fallback = :fallback,
           prompt_tokens = :pt, completion_tokens = :ct,
           finished_at = now(), lease_until = NULL, error = NULL
     WHERE invocation_id = :inv AND idx = :idx AND owner = :owner AND status = 'running'
    RETURNING idx
    """
)

_SUCCEED = text(
    """
    UPDATE invocations i
       SET status = 'succeeded', output = CAST(:output AS jsonb), finished_at = now(),
           prompt_tokens = t.pt, completion_tokens = t.ct
      FROM (SELECT COALESCE(SUM(prompt_tokens), 0) AS pt,
                   COALESCE(SUM(completion_tokens), 0) AS ct
              FROM invocation_steps WHERE invocation_id = :inv) t
     WHERE i.id = :inv AND i.status IN ('queued', 'running')
    """
)

_RELEASE = text(
    """
    UPDATE invocation_steps SET lease_until = now(), error = :error
     WHERE invocation_id = :inv AND idx = :idx AND owner = :owner AND status = 'running'
    """
)

_FAIL_STEP = text(
    """
    UPDATE invocation_steps
       SET status = 'failed', error = :error, finished_at = now(), lease_until = NULL
     WHERE invocation_id = :inv AND idx = :idx AND status = 'running'
    """
)

_FAIL_INVOCATION = text(
    """
    UPDATE invocations i
       SET status = 'failed', error = :error, finished_at = now(),
           prompt_tokens = t.pt, completion_tokens = t.ct
      FROM (SELECT COALESCE(SUM(prompt_tokens), 0) AS pt,
                   COALESCE(SUM(completion_tokens), 0) AS ct
              FROM invocation_steps WHERE invocation_id = :inv) t
     WHERE i.id = :inv AND i.status IN ('queued', 'running')
    """
)


class InvocationStore:
    """Reads and writes invocations through one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        *,
        invocation_id: str,
        workflow: str,
        payload_json: str,
        step_count: int,
        idempotency_key: str | None,
    ) -> tuple[str, bool, bool]:
        """Insert a queued invocation; returns (id, created, dispatched).

        With an ``idempotency_key`` already used, nothing is inserted and the existing
        invocation's id comes back with ``created=False``; the unique constraint decides,
        so two racing submits cannot both create one.
        """
        with self.engine.begin() as conn:
            row = conn.execute(
                text(
                    """
                    INSERT INTO invocations
                        (id, workflow, payload, status, idempotency_key, step_count)
                    VALUES (:id, :wf, CAST(:payload AS jsonb), 'queued', :key, :n)
                    ON CONFLICT (idempotency_key) DO NOTHING
                    RETURNING id
                    """
                ),
                {"id": invocation_id, "wf": workflow, "payload": payload_json,
                 "key": idempotency_key, "n": step_count},
            ).first()
            if row is not None:
                return invocation_id, True, False
            existing = conn.execute(
                text(
                    "SELECT id, workflow, dispatched_at IS NOT NULL FROM invocations "
                    "WHERE idempotency_key = :key"
                ),
                {"key": idempotency_key},
            ).one()
        return str(existing[0]), False, bool(existing[2])

    def workflow_of(self, invocation_id: str) -> str | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                text("SELECT workflow FROM invocations WHERE id = :id"), {"id": invocation_id}
            ).scalar()
        return None if value is None else str(value)

    def payload_of(self, invocation_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                text("SELECT payload FROM invocations WHERE id = :id"), {"id": invocation_id}
            ).scalar()
        return None if value is None else dict(value)

    def mark_dispatched(self, invocation_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text("UPDATE invocations SET dispatched_at = now() WHERE id = :id"),
                {"id": invocation_id},
            )

    def delete(self, invocation_id: str) -> None:
        """Remove an invocation whose dispatch failed, so a retry with its key can succeed."""
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM invocations WHERE id = :id"), {"id": invocation_id})

    def claim_step(
        self,
        *,
        invocation_id: str,
        index: int,
        name: str,
        kind: str,
        owner: str,
        lease_seconds: float,
        steal_from: str | None = None,
    ) -> Claim:
        """Claim step ``index`` for ``owner``; see :class:`ClaimState` for the outcomes."""
        with self.engine.begin() as conn:
            attempts = conn.execute(
                _CLAIM,
                {"inv": invocation_id, "idx": index, "name": name, "kind": kind,
                 "owner": owner, "lease": float(lease_seconds), "steal": steal_from or ""},
            ).scalar()
            if attempts is not None:
                if index == 0:
                    conn.execute(_START_INVOCATION, {"inv": invocation_id})
                return Claim(ClaimState.CLAIMED, attempts=int(attempts))
            state = conn.execute(_STEP_STATE, {"inv": invocation_id, "idx": index}).one()
        status, output, holder, remaining, invocation_status = state
        if status == StepStatus.DONE:
            return Claim(ClaimState.DONE, output=output)
        if status == StepStatus.FAILED or invocation_status == InvocationStatus.FAILED:
            return Claim(ClaimState.FAILED)
        return Claim(ClaimState.BUSY, owner=holder, retry_after=float(remaining or 0.0))

    def finish_step(
        self,
        *,
        invocation_id: str,
        index: int,
        owner: str,
        output: Any,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        fallback: bool = False,
        last: bool,
    ) -> Any:
        """Record step ``index`` done; the last step also completes the invocation.

        Returns the output that stands: ours, or that of a delivery that took our lease
        over and finished first.
        """
        output_json = json.dumps(output)
        with self.engine.begin() as conn:
            won = conn.execute(
                _FINISH_STEP,
                {"inv": invocation_id, "idx": index, "owner": owner, "output": output_json,
                 "fallback": fallback, "pt": prompt_tokens, "ct": completion_tokens},
            ).first()
            if won is None:
                standing = conn.execute(
                    _STEP_STATE, {"inv": invocation_id, "idx": index}
                ).one()
                return standing[1]
            if last:
                conn.execute(_SUCCEED, {"inv": invocation_id, "output": output_json})
        return output

    def release_step(self, *, invocation_id: str, index: int, owner: str, error: str) -> None:
        """Give up the claim after a transient error, so the retry may claim it at once."""
        with self.engine.begin() as conn:
            conn.execute(
                _RELEASE, {"inv": invocation_id, "idx": index, "owner": owner, "error": error}
            )

    def fail(self, *, invocation_id: str, index: int | None, error: str) -> None:
        """Mark the step (when given) and the invocation failed with ``error``."""
        with self.engine.begin() as conn:
            if index is not None:
                conn.execute(_FAIL_STEP, {"inv": invocation_id, "idx": index, "error": error})
            conn.execute(_FAIL_INVOCATION, {"inv": invocation_id, "error": error})

    def get(self, invocation_id: str) -> Invocation | None:
        """The invocation with its steps, or None when no such id exists."""
        with self.engine.connect() as conn:
            row = conn.execute(
                text("SELECT * FROM invocations WHERE id = :id"), {"id": invocation_id}
            ).mappings().first()
            if row is None:
                return None
            steps = conn.execute(
                text(
                    "SELECT * FROM invocation_steps WHERE invocation_id = :id ORDER BY idx"
                ),
                {"id": invocation_id},
            ).mappings().all()
        return _to_invocation(row, steps)

    def status_of(self, invocation_ids: list[str]) -> dict[str, InvocationStatus]:
        """Status per id, in one query (ids not found are absent)."""
        if not invocation_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT id, status FROM invocations WHERE id = ANY(:ids)"),
                {"ids": invocation_ids},
            ).all()
        return {str(r[0]): InvocationStatus(r[1]) for r in rows}

    def counts(self) -> dict[str, int]:
        """Invocations per status."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT status, count(*) FROM invocations GROUP BY status")
            ).all()
        return {str(r[0]): int(r[1]) for r in rows}


def _to_invocation(row: Any, steps: Any) -> Invocation:
    records = tuple(
        StepRecord(
            index=s["idx"],
            name=s["name"],
            kind=s["kind"],
            status=StepStatus(s["status"]),
            attempts=s["attempts"],
            output=s["output"],
            error=s["error"],
            fallback=s["fallback"],
            tokens=TokenUsage(s["prompt_tokens"], s["completion_tokens"]),
            started_at=s["started_at"],
            finished_at=s["finished_at"],
        )
        for s in steps
    )
    return Invocation(
        id=row["id"],
        workflow=row["workflow"],
        status=InvocationStatus(row["status"]),
        payload=row["payload"],
        output=row["output"],
        error=row["error"],
        steps=records,
        tokens=TokenUsage(row["prompt_tokens"], row["completion_tokens"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        idempotency_key=row["idempotency_key"],
    )


__all__ = ["Claim", "ClaimState", "InvocationRow", "InvocationStore"]
