"""``orchestrator demo``: the whole stack, N support-triage invocations, one summary."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import orchestrator
from orchestrator import runtime, state, subsystems
from orchestrator.agents.support_triage import customer_key
from orchestrator.cli.output import EXIT_FAILED, done, out, table
from orchestrator.devstack.fleet import LocalFleet, local_fleet
from orchestrator.invocation import Invocation, InvocationStatus
from orchestrator.telemetry import percentile

MESSAGES = (
    "I was charged twice for my subscription this month.",
    "My parcel has not arrived and tracking stopped updating.",
    "The app crashes when I upload a photo.",
    "How do I change the email address on my account?",
)


@dataclass(frozen=True)
class DemoReport:
    submitted: int
    succeeded: int
    failed: int
    lost: int
    latencies: list[float]
    llm_calls: int
    tokens: int
    fallbacks: int
    wall_time: float
    provider_429s: int | None
    tool_errors: int | None
    state_consistent: bool


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console)


def _sim_stats(url: str | None) -> dict[str, Any] | None:
    if url is None:
        return None
    base = url[:-3] if url.endswith("/v1") else url
    try:
        return dict(httpx.get(f"{base}/stats", timeout=5).json())
    except (httpx.HTTPError, ValueError):
        return None


def _count(stats: dict[str, Any] | None, *names: str) -> int | None:
    if stats is None:
        return None
    totals = stats.get("totals", stats)
    return sum(int(totals.get(n, 0) or 0) for n in names)


def _run(fleet: LocalFleet, console: Console, *, invocations: int, customers: int,
         timeout: float) -> DemoReport:
    run = f"{int(time.time())}"
    expected: dict[str, list[str]] = {}
    ids: list[str] = []
    started = time.monotonic()
    with _progress(console) as progress:
        task = progress.add_task("submitting", total=invocations)
        for i in range(invocations):
            customer = f"demo-{run}-{i % customers}"
            ticket = f"T{run}-{i}"
            expected.setdefault(customer, []).append(ticket)
            ids.append(orchestrator.submit(
                "support-triage",
                {"customer_id": customer, "ticket_id": ticket,
                 "message": MESSAGES[i % len(MESSAGES)]},
                idempotency_key=f"demo-{run}-{i}",
            ))
            progress.advance(task)
        done_task = progress.add_task("finished", total=invocations)
        store = subsystems.current().store
        deadline = time.monotonic() + timeout
        finished: dict[str, InvocationStatus] = {}
        while len(finished) < invocations and time.monotonic() < deadline:
            pending = [i for i in ids if i not in finished]
            for chunk in range(0, len(pending), 500):
                for inv_id, status in store.status_of(pending[chunk:chunk + 500]).items():
                    if status.finished:
                        finished[inv_id] = status
            progress.update(done_task, completed=len(finished))
            time.sleep(0.2)
    wall = time.monotonic() - started
    results: list[Invocation] = [orchestrator.get(i) for i in finished]
    consistent = True
    for customer, tickets in expected.items():
        record = state.get(customer_key(customer))
        value = record.value if record else {}
        handled, ticket_ids = value.get("tickets_handled"), set(value.get("ticket_ids", []))
        if handled != len(tickets) or ticket_ids != set(tickets):
            consistent = False
    return DemoReport(
        submitted=invocations,
        succeeded=sum(r.status is InvocationStatus.SUCCEEDED for r in results),
        failed=sum(r.status is InvocationStatus.FAILED for r in results),
        lost=invocations - len(results),
        latencies=[r.latency for r in results if r.latency is not None],
        llm_calls=sum(1 for r in results for s in r.steps if s.kind == "llm"
                      and s.status.value == "done"),
        tokens=sum(r.tokens.total for r in results),
        fallbacks=sum(1 for r in results for s in r.steps if s.fallback),
        wall_time=wall,
        provider_429s=_count(_sim_stats(fleet.settings.llm_endpoint), "rate_limited_429"),
        tool_errors=_count(_sim_stats(fleet.settings.tools_endpoint), "errors", "hangs"),
        state_consistent=consistent,
    )


def _fmt(value: float | None, unit: str = "s") -> str:
    return "n/a" if value is None else f"{value:.3f} {unit}"


def _summary(report: DemoReport) -> Table:
    rows = [
        ("invocations submitted", str(report.submitted)),
        ("succeeded", str(report.succeeded)),
        ("failed", str(report.failed)),
        ("lost (unfinished at the deadline)", str(report.lost)),
        ("latency p50", _fmt(percentile(report.latencies, 50))),
        ("latency p95", _fmt(percentile(report.latencies, 95))),
        ("latency p99", _fmt(percentile(report.latencies, 99))),
        ("LLM calls", str(report.llm_calls)),
        ("tokens", str(report.tokens)),
        ("provider 429s", "n/a" if report.provider_429s is None else str(report.provider_429s)),
        ("tool errors", "n/a" if report.tool_errors is None else str(report.tool_errors)),
        ("steps served by a fallback", str(report.fallbacks)),
        ("customer state consistent", "yes" if report.state_consistent else "NO"),
        ("wall time", _fmt(report.wall_time)),
        ("throughput", f"{report.submitted / report.wall_time:.1f} invocations/s"),
    ]
    return table("demo: support-triage", ["measure", "value"], rows, right=["value"])


def run_demo(*, invocations: int, customers: int, timeout: float) -> int:
    """Run the demo; returns the exit code (1 when anything failed, was lost or is wrong)."""
    settings = runtime.current().settings
    with local_fleet(settings, say=done) as fleet:
        report = _run(fleet, out, invocations=invocations, customers=customers,
                      timeout=timeout)
        out.print(_summary(report))
        out.print(
            "To watch a fleet in Flower: run `orchestrator up`, then in another shell "
            "`ORCH_FLOWER_USER=admin ORCH_FLOWER_PASSWORD=<choose one> ORCH_REDIS_URL=<the "
            "URL up prints> orchestrator flower` and open http://127.0.0.1:5555",
            highlight=False)
    ok = report.failed == 0 and report.lost == 0 and report.state_consistent
    return 0 if ok else EXIT_FAILED
