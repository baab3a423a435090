"""Invocations per workflow and status, read without counting the invocations table.

Counting ``invocations`` at every scrape costs a pass over every retained row (an
index-only scan: ~10 ms per 100k rows), so the exporter's scrape time would grow with
history. Instead, statement-level triggers of migration 0006 append the change each
statement makes to ``invocation_counts`` (one row per workflow and status it touched:
+1 inserted or entering, -1 deleted or leaving; about 10 us per statement). The counts
are the sums of that table; :meth:`InvocationCounts.fold` replaces its rows by their
sums, so it stays as small as the changes since the last fold (the exporter folds
before each read, the reconciler at each pass). Any write to ``invocations``, ours or
an operator's, is counted, and ``TRUNCATE`` empties the counts with it.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, text

# Concurrent folds are safe: a row two folds both see is deleted once (the second waits
# for the first and skips it), and each re-inserts the sum of what it deleted.
_FOLD = text("""
    WITH gone AS (DELETE FROM invocation_counts RETURNING workflow, status, n)
    INSERT INTO invocation_counts (workflow, status, n)
    SELECT workflow, status, sum(n) FROM gone GROUP BY workflow, status
    HAVING sum(n) <> 0""")

_READ = text("""
    SELECT workflow, status, sum(n) FROM invocation_counts GROUP BY workflow, status
    HAVING sum(n) <> 0""")


class InvocationCounts:
    """The kept counts of invocations per workflow and status."""

    def __init__(self, engine: Engine) -> None:
        self.auto = engine.execution_options(isolation_level="AUTOCOMMIT")

    def fold(self) -> None:
        """Replace the change rows by one row per workflow and status (in one
        statement). Raises SQLAlchemy's errors."""
        with self.auto.connect() as conn:
            self.fold_in(conn)

    @staticmethod
    def fold_in(conn: Connection) -> None:
        """:meth:`fold` through ``conn`` (in its transaction)."""
        conn.execute(_FOLD)

    @staticmethod
    def read(conn: Connection) -> list[tuple[str, str, int]]:
        """``(workflow, status, count)`` of every pair with invocations, through
        ``conn`` (so a caller can read them in its own transaction)."""
        return [(str(r[0]), str(r[1]), int(r[2])) for r in conn.execute(_READ)]
