"""Lab scenarios: the seed's traffic with time compressed and its ratios kept at any rate.

A day (1440 minutes) of traffic is played in ``minutes`` lab minutes. ``rate`` is the
mean arrival rate of ``pilot-12k`` in invocations per second of the lab (``seed-10x``
arrives ten times as fast). What is kept whatever the rate:

- LLM demand twice the provider's concurrency: the pilot runs ``2 x`` the provider's
  concurrency limit in worker threads, and the limit is sized to the mean demand (so the
  diurnal peak and the spike go past it);
- tool errors at 2 %, and hangs (0.5 %) longer than the tool's timeout;
- shared customer records: ``invocations_per_customer`` invocations per customer;
- a diurnal shape (night at a fifth of the peak) with a 5x spike for one lab minute's
  share of the day (at least :data:`MIN_SPIKE_SECONDS`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DAY_MINUTES = 1440
MIN_SPIKE_SECONDS = 6.0
LLM_LATENCY = 0.5
"""Seconds the LLM simulator takes per call (its default)."""
LLM_CALLS = 2
"""LLM calls of one support-triage invocation (classify, draft)."""
TOOL_TIMEOUT = 1.0
"""``lookup_order``'s declared read timeout (orchestrator/agents/support_triage.py)."""


@dataclass(frozen=True)
class Scenario:
    """One run's traffic. ``rate`` is this scenario's mean arrivals per lab second."""

    name: str
    per_day: int
    minutes: float
    rate: float
    tool_error_rate: float = 0.02
    tool_hang_rate: float = 0.005
    invocations_per_customer: int = 8
    spike_factor: float = 5.0
    spike_at: float = 0.45
    """Where the spike starts, as a fraction of the run."""

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0

    @property
    def lab_minute_stands_for(self) -> float:
        """Real minutes of the day one lab minute plays."""
        return DAY_MINUTES / self.minutes

    @property
    def compression(self) -> float:
        """Real seconds per lab second."""
        return self.lab_minute_stands_for

    @property
    def spike_seconds(self) -> float:
        return max(MIN_SPIKE_SECONDS, 60.0 / self.compression)

    @property
    def expected_invocations(self) -> int:
        """Arrivals the shape gives on average (the spike included)."""
        step = 0.5
        return round(self.rate * step * sum(self.shape(i * step)
                                            for i in range(int(self.seconds / step))))

    @property
    def customers(self) -> int:
        return max(1, self.expected_invocations // self.invocations_per_customer)

    @property
    def tool_hang_seconds(self) -> float:
        """A hang: far past the tool's timeout, bounded so a run ends."""
        return 8.0 * TOOL_TIMEOUT

    @property
    def llm_concurrency(self) -> int:
        """The provider's per-key concurrency limit: the mean LLM demand (calls in flight),
        so the pilot's ``2 x`` threads and the day's peak press on it."""
        return max(2, math.ceil(self.rate * LLM_CALLS * LLM_LATENCY / self.llm_keys))

    @property
    def llm_keys(self) -> int:
        return 1 if self.per_day <= 12_000 else 10

    @property
    def llm_rpm(self) -> int:
        """Requests per minute per key: twice the mean need (binding only in the storm)."""
        return max(60, math.ceil(self.rate * LLM_CALLS * 60 * 2 / self.llm_keys))

    @property
    def pilot_threads(self) -> int:
        """The pilot's worker threads: LLM demand twice the provider's concurrency."""
        return 2 * self.llm_concurrency * self.llm_keys

    def shape(self, t: float) -> float:
        """Relative arrival rate at lab second ``t`` (mean 1 over the run, spike apart)."""
        phase = t / self.seconds
        # Night at a fifth of the afternoon peak: 0.2 + 0.8 * day curve, peak at 60 % of the day.
        day = 0.5 - 0.5 * math.cos(2 * math.pi * (phase - 0.1))
        base = (0.2 + 0.8 * day) / 0.6
        start = self.spike_at * self.seconds
        if start <= t < start + self.spike_seconds:
            return base * self.spike_factor
        return base

    def peak_shape(self) -> float:
        return (1.0 / 0.6) * self.spike_factor

    def describe(self) -> str:
        """What the lab stands for, in one paragraph."""
        return (f"{self.name}: {self.per_day:,} invocations a day played in "
                f"{self.minutes:g} lab minutes; one lab minute stands for "
                f"{self.lab_minute_stands_for:g} minutes of the day, one lab invocation for "
                f"{self.per_day / max(1, self.expected_invocations):.1f}. Mean "
                f"{self.rate:g}/s, 5x spike for {self.spike_seconds:.0f}s; provider "
                f"{self.llm_keys} key(s) x {self.llm_concurrency} concurrent (pilot threads "
                f"{self.pilot_threads}); tools: {self.tool_error_rate:.0%} errors, "
                f"{self.tool_hang_rate:.1%} hangs of {self.tool_hang_seconds:g}s (timeout "
                f"{TOOL_TIMEOUT:g}s); ~{self.invocations_per_customer} invocations per customer.")


SCENARIOS = {"pilot-12k": 12_000, "seed-10x": 120_000}


def scenario(name: str, *, minutes: float, rate: float) -> Scenario:
    """The scenario ``name`` (see :data:`SCENARIOS`) for a run of ``minutes`` lab minutes,
    ``rate`` being pilot-12k's mean arrivals per second. Raises ``KeyError`` for an
    unknown name."""
    per_day = SCENARIOS[name]
    return Scenario(name, per_day, minutes, rate * per_day / SCENARIOS["pilot-12k"])
