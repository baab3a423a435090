"""The Prometheus exporter: fleet metrics read from Redis and PostgreSQL at scrape time.

Every figure lives in the shared stores (queue lists, pauses, breaker hashes, limiter
logs, counters of :mod:`orchestrator.telemetry`, invocation and step rows), so one
exporter serves a fleet of any size and no worker keeps Prometheus state of its own
(no multiprocess mode).

**Windows.** The distributions read from PostgreSQL (invocation latency, tokens per
invocation, step durations) and the step failures, retries and fallbacks cover the
invocations that *finished in the last* :data:`WINDOW_SECONDS` (5 minutes), recomputed at
each scrape. They are gauge histograms (OpenMetrics ``gaugehistogram``; ``histogram`` in
the classic text format): cumulative ``le`` buckets, ``_gcount`` and ``_gsum``, that go
down as well as up. Query them without ``rate()``:
``histogram_quantile(0.99, sum by (le, workflow) (orchestrator_invocation_latency_seconds_bucket))``
is the p99 of the last 5 minutes at each point; ``..._gcount / scalar(
orchestrator_metrics_window_seconds)`` is the rate finished per second. Why not counters
kept in Redis at each invocation's end: an invocation ends on several paths (the last
step, a failure, the reconciler, cancel, purge), all of which write PostgreSQL and only
PostgreSQL; reading it is exact whichever path ended it, needs nothing of the workers,
and gives the same answer from any number of exporters or after a restart.

**Sources.** Each part of a scrape is all or nothing; a part that fails (its store down)
is left out, logged once per scrape, and ``orchestrator_scrape_source_up{source}`` says
which: ``redis`` (the broker's Redis: queues, breakers, counters, LLM limiter), ``state``
(the memory layer's shards) and ``postgresql`` (invocations, steps, dead letters,
stalled). With PostgreSQL down, a scrape still answers with everything Redis knows.

Labels stay bounded: queue, workflow, step, kind, status, breaker, provider, shard, cause
(a fixed vocabulary, :mod:`orchestrator.ops.dead_letters`), never an invocation id or a
state key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from functools import cached_property

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from config.celery import QUEUES
from config.masking import mask_text
from orchestrator import telemetry
from orchestrator.breakers import known_breakers
from orchestrator.constants import QUEUE_RESUMED
from orchestrator.invocation import InvocationStatus
from orchestrator.ops.dead_letters import cause_of
from orchestrator.ops.queues import QueueControl
from orchestrator.state.flusher import lag_samples, quarantined_count
from orchestrator.store.metrics_queries import Histogram, MetricsQueries, Overdue
from orchestrator.subsystems import Subsystems
from orchestrator.telemetry import percentile
from orchestrator.workflow import registry as workflows

log = logging.getLogger(__name__)

QUANTILES = (50, 90, 99)
# The window of the PostgreSQL distributions (see the module docstring).
WINDOW_SECONDS = 300.0
# Bucket bounds: seconds from submit to end; seconds a step ran; tokens of an invocation.
LATENCY_BOUNDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
STEP_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600)
TOKEN_BOUNDS = (100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000)
# The oldest overdue invocations looked at per scrape for the stalled gauge.
STALL_SCAN = 1000
RECONCILER_ACTIONS = ("redispatched", "completed", "failed")
SOURCES = ("redis", "state", "postgresql")


class _Quantiles(GaugeMetricFamily):
    """Quantiles of recent samples, as a gauge with a ``quantile`` label."""

    def __init__(self, name: str, doc: str, labels: list[str]) -> None:
        super().__init__(name, doc, labels=[*labels, "quantile"])

    def add(self, label_values: list[str], values: list[float]) -> None:
        for q in QUANTILES:
            found = percentile(values, q)
            if found is not None:
                self.add_metric([*label_values, f"0.{q:02d}" if q < 100 else "1"], found)


def _gauge_histogram(name: str, doc: str, labels: list[str], histogram: Histogram,
                     label_sets: Iterable[tuple[str, ...]] = ()) -> GaugeHistogramMetricFamily:
    """``histogram`` as a family; ``label_sets`` are shown (empty) even without values."""
    family = GaugeHistogramMetricFamily(name, doc, labels=labels)
    for values in sorted({*histogram.series, *label_sets}):
        family.add_metric(list(values), histogram.buckets(values),
                          histogram.sums.get(values, 0.0))
    return family


class FleetCollector(Collector):
    """Reads the fleet's figures at each scrape (see the module docstring)."""

    def __init__(self, sub: Subsystems, *, window_seconds: float = WINDOW_SECONDS) -> None:
        self.sub = sub
        self.window_seconds = window_seconds

    @cached_property
    def queries(self) -> MetricsQueries:
        return MetricsQueries(self.sub.runtime.engine)

    @cached_property
    def control(self) -> QueueControl:
        return QueueControl(self.sub.runtime.redis, self.sub.runtime.producer)

    def collect(self) -> Iterator[Metric]:
        parts: list[tuple[str, Callable[[], Iterator[Metric]]]] = [
            ("redis", self._queues), ("redis", self._breakers), ("redis", self._counters),
            ("redis", self._llm), ("state", self._state), ("postgresql", self._postgresql)]
        up = dict.fromkeys(SOURCES, 1)
        for source, part in parts:
            try:
                found = list(part())  # all or nothing
            except Exception as exc:
                if up[source]:
                    log.error("metrics: the %s part of this scrape is missing: %s", source,
                              mask_text(f"{type(exc).__name__}: {exc}".splitlines()[0]))
                up[source] = 0
                continue
            yield from found
        sources = GaugeMetricFamily(
            "orchestrator_scrape_source_up",
            "1 if this scrape read the source, 0 if it was out of reach (its families are "
            "missing from the scrape)", labels=["source"])
        for source in SOURCES:
            sources.add_metric([source], up[source])
        yield sources
        yield GaugeMetricFamily("orchestrator_metrics_window_seconds",
                                "the window of the PostgreSQL gauge histograms and step "
                                "outcome gauges", value=self.window_seconds)

    # -- Redis: the broker's -------------------------------------------------------------

    def _queues(self) -> Iterator[Metric]:
        control = self.control
        paused = control.paused()
        depth = GaugeMetricFamily("orchestrator_queue_depth", "messages waiting per queue",
                                  labels=["queue"])
        pause = GaugeMetricFamily("orchestrator_queue_paused",
                                  "1 while the queue is paused (orchestrator pause/drain)",
                                  labels=["queue"])
        parked = GaugeMetricFamily("orchestrator_queue_parked",
                                   "messages set aside by drain --park, back on resume",
                                   labels=["queue"])
        for queue in QUEUES:
            depth.add_metric([queue], control.depth(queue))
            pause.add_metric([queue], 1 if queue in paused else 0)
            parked.add_metric([queue], control.parked(queue))
        yield from (depth, pause, parked)

    def _breakers(self) -> Iterator[Metric]:
        state = GaugeMetricFamily("orchestrator_breaker_state",
                                  "1 for each breaker's current state",
                                  labels=["breaker", "state"])
        error_rate = GaugeMetricFamily("orchestrator_breaker_error_rate",
                                       "failed share of the breaker's window",
                                       labels=["breaker"])
        for name in known_breakers(self.sub.runtime.redis):
            breaker = self.sub.breakers.get(name).status()
            for candidate in ("closed", "open", "half-open"):
                state.add_metric([name, candidate], 1.0 if breaker.state == candidate else 0.0)
            error_rate.add_metric([name], breaker.error_rate)
        yield state
        yield error_rate

    def _counters(self) -> Iterator[Metric]:
        found = telemetry.counters(self.sub.runtime.redis)
        providers = list(self.sub.llm.limiters)
        families = {
            "llm_calls": CounterMetricFamily("orchestrator_llm_calls", "completed LLM calls",
                                             labels=["provider"]),
            "llm_429": CounterMetricFamily("orchestrator_llm_429",
                                           "429s that slipped past the limiter",
                                           labels=["provider"]),
            "llm_keys_revoked": CounterMetricFamily("orchestrator_llm_key_revocations",
                                                    "keys taken out of rotation (401/403, "
                                                    "a first refusal or a refused probe)",
                                                    labels=["provider"]),
            "llm_keys_restored": CounterMetricFamily("orchestrator_llm_key_restorations",
                                                     "keys back in rotation (their probe "
                                                     "answered)", labels=["provider"]),
            "breaker_transitions": CounterMetricFamily("orchestrator_breaker_transitions",
                                                       "breaker state changes",
                                                       labels=["breaker", "to"]),
            "state_conflicts": CounterMetricFamily("orchestrator_state_conflicts",
                                                   "lost compare-and-set races, retried",
                                                   labels=["mode"]),
            "reconciler_actions": CounterMetricFamily(
                "orchestrator_reconciler_actions",
                "stalled invocations the reconciler moved on: redispatched, completed (had "
                "ended without PostgreSQL knowing), failed", labels=["action"]),
        }
        # Counters every fleet has, shown at 0 before their first event.
        zero = {f"{head}:{provider}": 0 for provider in providers
                for head in ("llm_calls", "llm_429", "llm_keys_revoked", "llm_keys_restored")}
        zero.update({f"reconciler_actions:{action}": 0 for action in RECONCILER_ACTIONS})
        tokens = CounterMetricFamily("orchestrator_llm_tokens", "LLM tokens used",
                                     labels=["kind"])
        blocked = CounterMetricFamily("orchestrator_tool_blocked_seconds",
                                      "worker time spent on tool calls that failed",
                                      labels=["tool"])
        hung = CounterMetricFamily("orchestrator_tool_hung_threads",
                                   "tool calls abandoned past their timeout while their "
                                   "thread ran on (hung until the tool returns)",
                                   labels=["tool"])
        for name, value in {**zero, **found}.items():
            head, _, rest = name.partition(":")
            if head in families:
                families[head].add_metric(rest.split(":"), value)
            elif head == "llm_prompt_tokens":
                tokens.add_metric(["prompt"], value)
            elif head == "llm_completion_tokens":
                tokens.add_metric(["completion"], value)
            elif head == "tool_blocked_ms":
                blocked.add_metric([rest], value / 1000)
            elif head == "tool_hung_threads":
                hung.add_metric([rest], value)
        yield from families.values()
        yield tokens
        yield blocked
        yield hung

    def _llm(self) -> Iterator[Metric]:
        wait = _Quantiles("orchestrator_llm_limiter_wait_seconds",
                          "seconds LLM calls waited for capacity (recent)", ["provider"])
        leases = GaugeMetricFamily("orchestrator_llm_calls_in_flight",
                                   "calls holding a limiter lease", labels=["provider", "key"])
        revoked = GaugeMetricFamily("orchestrator_llm_keys_revoked",
                                    "keys out of rotation now (refused with 401/403: cooling "
                                    "off or being probed); `orchestrator keys` names them",
                                    labels=["provider"])
        for name, limiter in self.sub.llm.limiters.items():
            wait.add([name], limiter.wait_samples())
            for key_id, n in limiter.in_flight().items():
                leases.add_metric([name, key_id], n)
            revoked.add_metric([name], len(limiter.revoked()))
        yield wait
        yield leases
        yield revoked

    # -- Redis: the memory layer's shards ------------------------------------------------

    def _state(self) -> Iterator[Metric]:
        latency = _Quantiles("orchestrator_state_update_seconds",
                             "state.update latency, read to acknowledged (sampled)", ["mode"])
        for mode in ("durable", "write-back"):
            latency.add([mode], telemetry.samples(self.sub.runtime.redis, f"state_update:{mode}"))
        dirty = GaugeMetricFamily("orchestrator_state_dirty",
                                  "records acknowledged but not yet in PostgreSQL",
                                  labels=["shard"])
        lag = _Quantiles("orchestrator_state_flush_lag_seconds",
                         "first dirty to persisted (recent)", ["shard"])
        quarantine = GaugeMetricFamily("orchestrator_state_quarantined",
                                       "records PostgreSQL refused, set aside in Redis "
                                       "unflushed (orchestrator status lists them)",
                                       labels=["shard"])
        for shard in self.sub.runtime.state_shards:
            dirty.add_metric([shard.name], shard.dirty_count())
            lag.add([shard.name], lag_samples(shard))
            quarantine.add_metric([shard.name], quarantined_count(shard))
        yield latency
        yield dirty
        yield lag
        yield quarantine

    # -- PostgreSQL ----------------------------------------------------------------------

    def _postgresql(self) -> Iterator[Metric]:
        figures = self.queries.read(
            window_seconds=self.window_seconds, stall_seconds=self.sub.settings.stall_seconds,
            latency_bounds=LATENCY_BOUNDS, step_bounds=STEP_BOUNDS, token_bounds=TOKEN_BOUNDS,
            overdue_limit=STALL_SCAN)
        known = workflows.names()
        invocations = GaugeMetricFamily(
            "orchestrator_invocations", "invocations per workflow (agent type) and status",
            labels=["workflow", "status"])
        counts = {(w, s): 0 for w in known for s in (x.value for x in InvocationStatus)}
        counts.update({(w, s): n for w, s, n in figures.invocations})
        for (workflow, status), n in sorted(counts.items()):
            invocations.add_metric([workflow, status], n)
        yield invocations

        window = f"of the invocations finished in the last {self.window_seconds:.0f}s"
        yield _gauge_histogram(
            "orchestrator_invocation_latency_seconds",
            f"seconds from submit (or replay) to the end, {window}",
            ["workflow", "status"], figures.latency)
        yield _gauge_histogram(
            "orchestrator_invocation_tokens", f"LLM tokens per invocation, {window}",
            ["workflow"], figures.tokens)
        yield _gauge_histogram(
            "orchestrator_step_duration_seconds", f"seconds each step ran, {window}",
            ["workflow", "step", "kind"], figures.step_duration)
        labels = ["workflow", "step", "kind"]
        failures = GaugeMetricFamily("orchestrator_step_failures",
                                     f"steps that failed (ending the invocation), {window}",
                                     labels=labels)
        retries = GaugeMetricFamily("orchestrator_step_retries",
                                    f"step attempts beyond the first, {window}", labels=labels)
        fallbacks = GaugeMetricFamily("orchestrator_step_fallbacks",
                                      f"tool fallbacks served, {window}", labels=labels)
        for key, outcome in sorted(figures.step_outcomes.items()):
            failures.add_metric(list(key), outcome.failed)
            retries.add_metric(list(key), outcome.retries)
            fallbacks.add_metric(list(key), outcome.fallbacks)
        yield from (failures, retries, fallbacks)

        dead = GaugeMetricFamily("orchestrator_dead_letters",
                                 "failed invocations (dead letters) by cause; a replayed "
                                 "one leaves", labels=["workflow", "cause"])
        by_cause: dict[tuple[str, str], int] = {}
        for workflow, error, n in figures.failed_errors:
            cause = (workflow, cause_of(error))
            by_cause[cause] = by_cause.get(cause, 0) + n
        for cause, n in sorted(by_cause.items()):
            dead.add_metric(list(cause), n)
        yield dead

        stalled = GaugeMetricFamily(
            "orchestrator_invocations_stalled",
            "queued or running invocations without progress for ORCH_STALL_SECONDS and not "
            "held by an operator (paused queue, parked messages): the reconciler's to move "
            f"on (the oldest {STALL_SCAN} looked at)", labels=["workflow"])
        found = dict.fromkeys(known, 0)
        found.update(self._stalled(figures.overdue))
        for workflow, n in sorted(found.items()):
            stalled.add_metric([workflow], n)
        yield stalled

    def _stalled(self, overdue: list[Overdue]) -> dict[str, int]:
        """Stalled invocations per workflow among ``overdue``, as the reconciler judges
        them (no live claim, no progress for the stall time, counted from a resume of
        their next queue) without its allowance for a slowly draining queue."""
        if not overdue:
            return {}
        client = self.sub.runtime.redis
        control = self.control
        paused = set(control.paused())
        held = paused | {q for q in QUEUES if control.parked(q)}
        resumed = {k.decode(): int(v) for k, v in client.hgetall(QUEUE_RESUMED).items()}
        stall_ms = self.sub.settings.stall_seconds * 1000
        found: dict[str, int] = {}
        for item in overdue:
            progress = self.sub.claims.progress(item.id)
            if progress.live_claims:
                continue
            idle_ms = progress.now_ms - max(progress.last_progress_ms, item.created_ms)
            queue = self._next_queue(item.workflow, set(progress.records))
            if queue in held:
                continue
            if queue in resumed:
                idle_ms = min(idle_ms, progress.now_ms - resumed[queue])
            if idle_ms >= stall_ms:
                found[item.workflow] = found.get(item.workflow, 0) + 1
        return found

    @staticmethod
    def _next_queue(workflow: str, done: set[int]) -> str | None:
        if workflow not in workflows.names():
            return None
        steps = workflows.get(workflow).steps
        index = next((i for i in range(len(steps)) if i not in done), None)
        return None if index is None else steps[index].kind.queue


def registry(sub: Subsystems) -> CollectorRegistry:
    found = CollectorRegistry(auto_describe=False)
    found.register(FleetCollector(sub))
    return found
