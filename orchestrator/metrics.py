"""The Prometheus exporter: fleet metrics read from Redis and PostgreSQL at scrape time.

Every figure lives in the shared stores (queue lists, breaker hashes, limiter logs,
counters of :mod:`orchestrator.telemetry`), so one exporter serves a fleet of any size and
no worker needs Prometheus's multiprocess mode.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from config.celery import QUEUES
from orchestrator import telemetry
from orchestrator.breakers import known_breakers
from orchestrator.state.flusher import lag_samples, quarantined_count
from orchestrator.subsystems import Subsystems
from orchestrator.telemetry import percentile

QUANTILES = (50, 90, 99)


def _summary(name: str, doc: str, labels: list[str]) -> SummaryMetricFamily:
    return SummaryMetricFamily(name, doc, labels=labels)


class _Quantiles(GaugeMetricFamily):
    """Quantiles of recent samples, as a gauge with a ``quantile`` label."""

    def __init__(self, name: str, doc: str, labels: list[str]) -> None:
        super().__init__(name, doc, labels=[*labels, "quantile"])

    def add(self, label_values: list[str], values: list[float]) -> None:
        for q in QUANTILES:
            found = percentile(values, q)
            if found is not None:
                self.add_metric([*label_values, f"0.{q:02d}" if q < 100 else "1"], found)


class FleetCollector(Collector):
    def __init__(self, sub: Subsystems) -> None:
        self.sub = sub

    def collect(self) -> Iterator[Metric]:
        sub = self.sub
        client = sub.runtime.redis
        depth = GaugeMetricFamily("orchestrator_queue_depth", "messages waiting per queue",
                                  labels=["queue"])
        for queue in QUEUES:
            depth.add_metric([queue], int(client.llen(queue)))
        yield depth

        invocations = GaugeMetricFamily(
            "orchestrator_invocations", "invocations per workflow (agent type) and status",
            labels=["workflow", "status"])
        for workflow, status, n in sub.store.counts_by_workflow():
            invocations.add_metric([workflow, status], n)
        tokens = sub.store.recent_token_totals(1000)
        yield invocations
        per_invocation = _Quantiles("orchestrator_invocation_tokens",
                                    "tokens per invocation, last 1000 finished", [])
        per_invocation.add([], tokens)
        yield per_invocation

        state = GaugeMetricFamily("orchestrator_breaker_state",
                                  "1 for each breaker's current state",
                                  labels=["breaker", "state"])
        error_rate = GaugeMetricFamily("orchestrator_breaker_error_rate",
                                       "failed share of the breaker's window",
                                       labels=["breaker"])
        for name in known_breakers(client):
            breaker = sub.breakers.get(name).status()
            for candidate in ("closed", "open", "half-open"):
                state.add_metric([name, candidate], 1.0 if breaker.state == candidate else 0.0)
            error_rate.add_metric([name], breaker.error_rate)
        yield state
        yield error_rate

        yield from self._counters()
        yield from self._llm()
        yield from self._state()

    def _counters(self) -> Iterator[Metric]:
        found = telemetry.counters(self.sub.runtime.redis)
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
        }
        tokens = CounterMetricFamily("orchestrator_llm_tokens", "LLM tokens used",
                                     labels=["kind"])
        blocked = CounterMetricFamily("orchestrator_tool_blocked_seconds",
                                      "worker time spent on tool calls that failed",
                                      labels=["tool"])
        hung = CounterMetricFamily("orchestrator_tool_hung_threads",
                                   "tool calls abandoned past their timeout while their "
                                   "thread ran on (hung until the tool returns)",
                                   labels=["tool"])
        for name, value in found.items():
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


def registry(sub: Subsystems) -> CollectorRegistry:
    found = CollectorRegistry(auto_describe=False)
    found.register(FleetCollector(sub))
    return found
