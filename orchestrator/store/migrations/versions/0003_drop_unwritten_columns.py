"""drop columns nothing writes (invocations.dispatched_at, invocation_steps.owner/lease_until)

Step claims and leases live in Redis beside the broker's messages; these columns were
never written.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_column("invocations", "dispatched_at")
    op.drop_column("invocation_steps", "owner")
    op.drop_column("invocation_steps", "lease_until")


def downgrade() -> None:
    op.add_column("invocation_steps",
                  sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("invocation_steps", sa.Column("owner", sa.String(255), nullable=True))
    op.add_column("invocations",
                  sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True))
