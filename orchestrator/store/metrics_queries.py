"""What the metrics exporter reads from PostgreSQL at scrape time, in one read-only
transaction with a statement timeout (a slow database costs one scrape part, never a
hung scrape).

Distributions are computed here, not fetched row by row: each query assigns every row
its histogram bucket (``width_bucket`` over the bounds) and returns one row per label set
and bucket, so a scrape moves a few hundred rows whatever the traffic. The windows lean on
the partial indexes of migration 0005; the counts per workflow and status are the kept
ones of :mod:`orchestrator.store.counts` (migration 0006), not a count of the table.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from orchestrator.store.counts import InvocationCounts

log = logging.getLogger(__name__)

# How long one scrape's queries may take in all, in milliseconds; then the PostgreSQL
# part of the scrape is reported missing.
STATEMENT_TIMEOUT_MS = 5000
# The dead letters' errors are grouped on their start: the cause is read from it.
ERROR_PREFIX_CHARS = 300


@dataclass
class Histogram:
    """Cumulative bucket counts per label set (Prometheus ``le`` semantics: a value
    counts in every bucket whose bound is at or above it), with the sum and count."""

    bounds: tuple[float, ...]
    series: dict[tuple[str, ...], list[int]] = field(default_factory=dict)
    sums: dict[tuple[str, ...], float] = field(default_factory=dict)

    def add(self, labels: tuple[str, ...], bucket: int, count: int, total: float) -> None:
        """``count`` values, summing to ``total``, whose first bound at or above them is
        ``bounds[bucket]`` (``bucket == len(bounds)``: above every bound)."""
        counts = self.series.setdefault(labels, [0] * (len(self.bounds) + 1))
        for i in range(bucket, len(counts)):
            counts[i] += count
        self.sums[labels] = self.sums.get(labels, 0.0) + total

    def buckets(self, labels: tuple[str, ...]) -> list[tuple[str, int]]:
        """``[(le, cumulative count), ..., ("+Inf", count)]`` of one label set."""
        counts = self.series.get(labels, [0] * (len(self.bounds) + 1))
        return [*((_le(b), c) for b, c in zip(self.bounds, counts, strict=False)),
                ("+Inf", counts[-1])]


def _le(bound: float) -> str:
    return repr(float(bound))


@dataclass(frozen=True)
class StepOutcomes:
    failed: int  # steps that failed (ending their invocation)
    retries: int  # attempts beyond the first
    fallbacks: int  # tool fallbacks served


@dataclass(frozen=True)
class Overdue:
    """A queued or running invocation older than the stall threshold."""

    id: str
    workflow: str
    created_ms: int


@dataclass
class WindowFigures:
    """Everything the exporter shows from PostgreSQL, read at one moment."""

    invocations: list[tuple[str, str, int]]  # (workflow, status, count), all time
    latency: Histogram  # (workflow, status): seconds from submit (or replay) to end
    tokens: Histogram  # (workflow,): prompt + completion tokens of each invocation
    step_duration: Histogram  # (workflow, step, kind): seconds
    step_outcomes: dict[tuple[str, str, str], StepOutcomes]
    failed_errors: list[tuple[str, str | None, int]]  # (workflow, error start, count)
    overdue: list[Overdue]


def _bucketed(value_sql: str) -> str:
    """SQL for the index of the first bound at or above ``value_sql`` (the number of
    bounds below it), from ``width_bucket`` over the negated bounds, ascending."""
    return f":n - width_bucket(-({value_sql}), CAST(:negated AS float8[]))"


def _bounds_params(bounds: Sequence[float]) -> dict[str, object]:
    return {"n": len(bounds), "negated": sorted(-float(b) for b in bounds)}


_LATENCY = "EXTRACT(EPOCH FROM finished_at - COALESCE(replayed_at, created_at))"
_STEP_SECONDS = "EXTRACT(EPOCH FROM s.finished_at - s.started_at)"


class MetricsQueries:
    """The exporter's reads, through one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def read(self, *, window_seconds: float, stall_seconds: float,
             latency_bounds: Sequence[float], step_bounds: Sequence[float],
             token_bounds: Sequence[float], overdue_limit: int = 1000) -> WindowFigures:
        """Invocations by workflow and status (all time); over the invocations that
        finished in the last ``window_seconds``: latency, tokens, step durations and step
        outcomes; failed invocations' errors; the ``overdue_limit`` oldest queued or
        running invocations created over ``stall_seconds`` ago.

        Raises SQLAlchemy's errors (the database down, the statement timeout passed).
        """
        self._fold()
        with self.engine.connect() as conn, conn.begin():
            conn.execute(text("SET TRANSACTION READ ONLY"))
            conn.execute(text(f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT_MS)}"))
            window: dict[str, object] = {"window": float(window_seconds)}
            step_duration, step_outcomes = self._steps(conn, step_bounds, window)
            return WindowFigures(
                invocations=InvocationCounts.read(conn),
                latency=self._histogram(conn, latency_bounds, f"""
                    SELECT workflow, status, {_bucketed(_LATENCY)}, count(*), sum({_LATENCY})
                      FROM invocations
                     WHERE finished_at > now() - make_interval(secs => :window)
                     GROUP BY 1, 2, 3""", window),
                tokens=self._histogram(conn, token_bounds, f"""
                    SELECT workflow, {_bucketed("prompt_tokens + completion_tokens")},
                           count(*), sum(prompt_tokens + completion_tokens)
                      FROM invocations
                     WHERE finished_at > now() - make_interval(secs => :window)
                     GROUP BY 1, 2""", window),
                step_duration=step_duration,
                step_outcomes=step_outcomes,
                failed_errors=[(str(r[0]), r[1], int(r[2])) for r in conn.execute(text(
                    "SELECT workflow, left(error, :chars), count(*) FROM invocations "
                    "WHERE status = 'failed' GROUP BY 1, 2"),
                    {"chars": ERROR_PREFIX_CHARS})],
                overdue=[Overdue(str(r[0]), str(r[1]), int(r[2])) for r in conn.execute(text(
                    "SELECT id, workflow, (EXTRACT(EPOCH FROM created_at) * 1000)::bigint "
                    "FROM invocations WHERE status IN ('queued', 'running') "
                    "AND created_at < now() - make_interval(secs => :stall) "
                    "ORDER BY created_at, id LIMIT :n"),
                    {"stall": float(stall_seconds), "n": overdue_limit})],
            )

    def _fold(self) -> None:
        """Fold the kept counts first, so the read sums a handful of rows (a database
        that refuses the write, a read replica, only makes the read sum more)."""
        try:
            with self.engine.connect() as conn, conn.begin():
                conn.execute(text(f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT_MS)}"))
                # A fold lost in a crash changes no count: no need to wait for the disk.
                conn.execute(text("SET LOCAL synchronous_commit = off"))
                InvocationCounts.fold_in(conn)
        except DBAPIError as exc:
            log.warning("metrics: folding the invocation counts failed: %s",
                        str(exc.orig).splitlines()[0] if exc.orig else exc)

    @staticmethod
    def _histogram(conn: Connection, bounds: Sequence[float], sql: str,
                   params: dict[str, object]) -> Histogram:
        found = Histogram(tuple(bounds))
        for row in conn.execute(text(sql), {**params, **_bounds_params(bounds)}):
            *labels, bucket, count, total = row
            found.add(tuple(str(v) for v in labels), int(bucket), int(count),
                      float(total or 0))
        return found

    @staticmethod
    def _steps(conn: Connection, bounds: Sequence[float], params: dict[str, object],
               ) -> tuple[Histogram, dict[tuple[str, str, str], StepOutcomes]]:
        durations = Histogram(tuple(bounds))
        outcomes: dict[tuple[str, str, str], StepOutcomes] = {}
        # The steps are looked up per invocation of the window (``OFFSET 0`` keeps the
        # planner from flattening the subquery into a join it may run as a hash join over
        # a sequential scan of every step row ever recorded).
        rows = conn.execute(text(f"""
            SELECT i.workflow, s.name, s.kind, {_bucketed(_STEP_SECONDS)}, count(*),
                   sum({_STEP_SECONDS}), count(*) FILTER (WHERE s.status = 'failed'),
                   sum(GREATEST(s.attempts - 1, 0)), count(*) FILTER (WHERE s.fallback)
              FROM invocations i CROSS JOIN LATERAL (
                   SELECT * FROM invocation_steps s
                    WHERE s.invocation_id = i.id AND s.finished_at IS NOT NULL
                   OFFSET 0) s
             WHERE i.finished_at > now() - make_interval(secs => :window)
             GROUP BY 1, 2, 3, 4"""), {**params, **_bounds_params(bounds)})
        for workflow, step, kind, bucket, count, total, failed, retries, fallbacks in rows:
            labels = (str(workflow), str(step), str(kind))
            durations.add(labels, int(bucket), int(count), float(total or 0))
            seen = outcomes.get(labels, StepOutcomes(0, 0, 0))
            outcomes[labels] = StepOutcomes(seen.failed + int(failed),
                                            seen.retries + int(retries or 0),
                                            seen.fallbacks + int(fallbacks))
        return durations, outcomes
