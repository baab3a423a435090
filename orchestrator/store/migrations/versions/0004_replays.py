"""invocations remember their replays (count and last time), for inspect's timeline

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("invocations", sa.Column("replays", sa.Integer, nullable=False,
                                           server_default="0"))
    op.add_column("invocations",
                  sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("invocations", "replayed_at")
    op.drop_column("invocations", "replays")
