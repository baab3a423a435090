"""kept counts and indexes: every routine query proportional to what it returns, not to
the invocations retained

Measured with EXPLAIN ANALYZE on 100k invocations (500k step rows; the README's
"Cost as work grows"):

- the exporter's invocations per (workflow, status) was a sequential scan of the whole
  table at every scrape: ``invocation_counts`` keeps them (statement-level triggers
  append each statement's change; :mod:`orchestrator.store.counts` folds and reads
  them), started here from the rows already present;
- ``status``'s counts per status: a (workflow, status) index answers them by an
  index-only scan (btree deduplication keeps it a few hundred kB for any number of
  rows);
- ``invocations`` listings (newest first, ``--since``) and ``status``'s last hour were
  sequential scans with a sort: an index on ``created_at``;
- dead letters (``dlq list``, the exporter's dead letters by cause): a partial index on
  ``created_at`` of the failed ones only;
- the single-column ``status`` and ``workflow`` indexes go: the indexes above (and the
  partial ones of 0005) serve every query that used them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


_FUNCTIONS = {
    "invocation_counts_inserted": """
        INSERT INTO invocation_counts (workflow, status, n)
        SELECT workflow, status, count(*) FROM new_rows GROUP BY workflow, status""",
    "invocation_counts_updated": """
        INSERT INTO invocation_counts (workflow, status, n)
        SELECT workflow, status, sum(n) FROM (
            SELECT workflow, status, 1 AS n FROM new_rows
            UNION ALL SELECT workflow, status, -1 FROM old_rows) AS changed
        GROUP BY workflow, status HAVING sum(n) <> 0""",
    "invocation_counts_deleted": """
        INSERT INTO invocation_counts (workflow, status, n)
        SELECT workflow, status, -count(*) FROM old_rows GROUP BY workflow, status""",
    "invocation_counts_truncated": "DELETE FROM invocation_counts",
}
_TRIGGERS = {
    "invocation_counts_inserted": "AFTER INSERT ON invocations "
                                  "REFERENCING NEW TABLE AS new_rows",
    "invocation_counts_updated": "AFTER UPDATE ON invocations "
                                 "REFERENCING NEW TABLE AS new_rows OLD TABLE AS old_rows",
    "invocation_counts_deleted": "AFTER DELETE ON invocations "
                                 "REFERENCING OLD TABLE AS old_rows",
    "invocation_counts_truncated": "AFTER TRUNCATE ON invocations",
}


def upgrade() -> None:
    op.create_table(
        "invocation_counts",
        sa.Column("workflow", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("n", sa.BigInteger, nullable=False),
    )
    for name, body in _FUNCTIONS.items():
        op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                   f"BEGIN {body}; RETURN NULL; END $$")
        op.execute(f"CREATE TRIGGER {name} {_TRIGGERS[name]} FOR EACH STATEMENT "
                   f"EXECUTE FUNCTION {name}()")
    # After the triggers, in the same transaction: writes wait for it (CREATE TRIGGER
    # locks the table against them), so nothing is counted twice or missed.
    op.execute("INSERT INTO invocation_counts (workflow, status, n) "
               "SELECT workflow, status, count(*) FROM invocations GROUP BY 1, 2")
    op.create_index("ix_invocations_workflow_status", "invocations", ["workflow", "status"])
    op.create_index("ix_invocations_created_at", "invocations", ["created_at"])
    op.create_index("ix_invocations_failed_created_at", "invocations", ["created_at"],
                    postgresql_where=sa.text("status = 'failed'"))
    op.drop_index("ix_invocations_status", table_name="invocations")
    op.drop_index("ix_invocations_workflow", table_name="invocations")


def downgrade() -> None:
    op.create_index("ix_invocations_workflow", "invocations", ["workflow"])
    op.create_index("ix_invocations_status", "invocations", ["status"])
    op.drop_index("ix_invocations_failed_created_at", table_name="invocations")
    op.drop_index("ix_invocations_created_at", table_name="invocations")
    op.drop_index("ix_invocations_workflow_status", table_name="invocations")
    for name in _TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON invocations")
        op.execute(f"DROP FUNCTION {name}()")
    op.drop_table("invocation_counts")
