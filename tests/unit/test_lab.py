"""The load lab's pure parts: scenarios keep the seed's ratios at any rate, the schedule is
the same for the same seed, faults are planned inside the run, the report accounts for
every arrival and counts lost record updates."""

from __future__ import annotations

import pytest

from orchestrator.lab.faults import fault_plan
from orchestrator.lab.outcome import Fate, Outcome
from orchestrator.lab.report import rows, series, summary
from orchestrator.lab.runner import ProfileResult
from orchestrator.lab.scenario import LLM_CALLS, LLM_LATENCY, TOOL_TIMEOUT, scenario
from orchestrator.lab.schedule import arrivals


def test_seed_10x_arrives_ten_times_as_fast_as_pilot_12k() -> None:
    pilot = scenario("pilot-12k", minutes=10, rate=0.5)
    seed = scenario("seed-10x", minutes=10, rate=0.5)
    assert seed.rate == pytest.approx(10 * pilot.rate)
    assert pilot.lab_minute_stands_for == 144


@pytest.mark.parametrize("rate", [0.2, 1.0, 7.0])
@pytest.mark.parametrize("name", ["pilot-12k", "seed-10x"])
def test_ratios_are_kept_at_any_rate(name: str, rate: float) -> None:
    scn = scenario(name, minutes=5, rate=rate)
    limit = scn.llm_concurrency * scn.llm_keys
    assert scn.pilot_threads == 2 * limit  # LLM demand twice the provider's limit
    assert limit >= rate * scn.rate / rate * LLM_CALLS * LLM_LATENCY * 0.99
    assert scn.tool_error_rate == 0.02
    assert scn.tool_hang_seconds > TOOL_TIMEOUT
    assert scn.invocations_per_customer > 1


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    scn = scenario("pilot-12k", minutes=3, rate=1.0)
    first, again, other = arrivals(scn, 7), arrivals(scn, 7), arrivals(scn, 8)
    assert first == again
    assert first != other
    assert abs(len(first) - scn.expected_invocations) < 0.25 * scn.expected_invocations
    assert all(0 <= a.at < scn.seconds for a in first)
    customers = {a.customer_id for a in first}
    assert len(customers) < len(first) / 3  # many invocations per customer


def test_the_spike_is_five_times_the_rate_around_it() -> None:
    scn = scenario("pilot-12k", minutes=10, rate=1.0)
    start = scn.spike_at * scn.seconds
    assert scn.shape(start + 1) == pytest.approx(5 * scn.shape(start - 0.001), rel=0.01)
    night, afternoon = scn.shape(0.1 * scn.seconds), scn.shape(0.6 * scn.seconds)
    assert afternoon > 4 * night


def test_every_fault_falls_inside_the_run_in_order() -> None:
    scn = scenario("seed-10x", minutes=3, rate=0.3)
    plan = fault_plan(scn)
    assert {f.kind for f in plan} == {"tool_outage", "llm_storm", "llm_5xx", "kill_worker",
                                      "restart_redis", "restart_postgres", "kill_reconciler"}
    assert all(0 < f.start < f.end < scn.seconds for f in plan)
    five_xx = next(f for f in plan if f.kind == "llm_5xx")
    assert five_xx.end - five_xx.start == pytest.approx(max(5.0, 60 / scn.compression))


def _result(outcomes: list[Outcome], tickets: dict[str, tuple[int, int]]) -> ProfileResult:
    return ProfileResult("pilot", "r", outcomes, [{"t": 1.0, "depth": 7, "provider_429s": 3,
                                                   "breakers": {"lookup_order": "open"}}],
                         [], [], {"rate_limited_429": 3, "requests": 9}, {"calls": 4},
                         tickets, 99.0, True)


def test_summary_accounts_for_every_arrival_and_counts_lost_updates() -> None:
    outcomes = [
        Outcome(0, "c1", Fate.SUCCEEDED, 0.0, 1.0, 1.0),
        Outcome(1, "c1", Fate.SUCCEEDED, 0.5, 2.0, 1.5),
        Outcome(2, "c1", Fate.DEGRADED, 0.6, 2.0, 1.4, tool_seconds=1.0),
        Outcome(3, "c2", Fate.FAILED, 0.7, 3.0, 2.3, cause="LLM 429"),
        Outcome(4, "c2", Fate.REFUSED, 0.8, retry_after=2.5),
        Outcome(5, "c2", Fate.LOST, 0.9, cause="running at the deadline"),
    ]
    s = summary(_result(outcomes, {"c1": (2, 3), "c2": (0, 0)}))
    assert (s["submitted"], s["accepted"], s["succeeded"], s["degraded"], s["failed"],
            s["refused_backpressure"], s["lost"]) == (6, 5, 2, 1, 1, 1, 1)
    assert s["surfaced_429_failures"] == 1
    assert s["lost_state_updates"] == 1
    assert s["max_queue_depth"] == 7
    assert s["success_rate"] == pytest.approx(3 / 5)
    assert dict(rows(s))["refused with retry-after (Backpressure)"].startswith("1 (")
    chart = series(_result(outcomes, {}), bucket=1.0)
    assert sum(chart["throughput"]) == 4  # the four that finished
    assert chart["breakers"] == {"lookup_order": [1]}
