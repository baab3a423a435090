"""indexes for the metrics exporter's scrape-time queries (and the reconciler's scan)

- invocations finished in the last window (latency, step durations, tokens): a partial
  index on ``finished_at`` of finished invocations;
- queued or running invocations older than ORCH_STALL_SECONDS (stalled, and the
  reconciler's pages): a partial index on ``created_at`` of unfinished ones, which stays
  as small as the work in flight.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_invocations_finished_at", "invocations", ["finished_at"],
                    postgresql_where=sa.text("finished_at IS NOT NULL"))
    op.create_index("ix_invocations_unfinished_created_at", "invocations",
                    ["created_at", "id"],
                    postgresql_where=sa.text("status IN ('queued', 'running')"))


def downgrade() -> None:
    op.drop_index("ix_invocations_unfinished_created_at", table_name="invocations")
    op.drop_index("ix_invocations_finished_at", table_name="invocations")
