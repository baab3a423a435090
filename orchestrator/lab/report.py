"""A run's figures: the summary of each profile (what the tables and the JSON show) and
the time series the chart draws."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.lab.outcome import Fate
from orchestrator.lab.runner import LabResult, ProfileResult
from orchestrator.telemetry import percentile


def summary(result: ProfileResult) -> dict[str, Any]:
    """Counts by fate, failures by cause, latency percentiles, 429s, lost record updates."""
    fates = Counter(o.fate for o in result.outcomes)
    accepted = [o for o in result.outcomes if o.accepted]
    served = fates[Fate.SUCCEEDED] + fates[Fate.DEGRADED]
    latencies = [o.latency for o in result.outcomes if o.served and o.latency is not None]
    causes = Counter(o.cause or "unknown" for o in result.outcomes if o.fate is Fate.FAILED)
    surfaced_429 = causes.get("LLM 429", 0)
    lost_updates = sum(max(0, ok - handled) for handled, ok in result.tickets.values())
    extra_updates = sum(max(0, handled - ok) for handled, ok in result.tickets.values())
    depths = [s["depth"] for s in result.samples if s["depth"] is not None]
    retry_afters = [o.retry_after for o in result.outcomes if o.retry_after is not None]
    return {
        "profile": result.name,
        "submitted": len(result.outcomes),
        "accepted": len(accepted),
        "succeeded": fates[Fate.SUCCEEDED],
        "degraded": fates[Fate.DEGRADED],
        "failed": fates[Fate.FAILED],
        "failed_by_cause": dict(causes.most_common()),
        "refused_backpressure": fates[Fate.REFUSED],
        "refused_retry_after_max": max(retry_afters) if retry_afters else None,
        "submit_errors": fates[Fate.SUBMIT_ERROR],
        "cancelled": fates[Fate.CANCELLED],
        "lost": fates[Fate.LOST],
        "success_rate": served / len(accepted) if accepted else None,
        "latency_p50": percentile(latencies, 50),
        "latency_p95": percentile(latencies, 95),
        "latency_p99": percentile(latencies, 99),
        "provider_429s": int(result.provider.get("rate_limited_429", 0)),
        "provider_requests": int(result.provider.get("requests", 0)),
        "surfaced_429_failures": surfaced_429,
        "customers": len(result.tickets),
        "lost_state_updates": lost_updates,
        "extra_state_updates": extra_updates,
        "max_queue_depth": max(depths) if depths else None,
        "tool_blocked_worker_seconds": round(sum(o.tool_seconds for o in result.outcomes), 1),
        "tool_calls": int(result.tools.get("calls", 0)),
        "tool_hangs": int(result.tools.get("hangs", 0)),
        "provider_peak_in_flight": result.provider_peak[0],
        "provider_concurrency": result.provider_peak[1],
        "celery_nodes": result.hosts.get("celery_nodes", {}),
        "node_hosts": result.hosts.get("node_hosts", []),
        "claim_owner_hosts": result.hosts.get("claim_owner_hosts", {}),
        "deadline_s": result.deadline,
        "drained": result.drained,
        "fault_errors": result.fault_errors,
    }


def _num(value: float | None, unit: str = "s") -> str:
    return "n/a" if value is None else f"{value:.2f} {unit}"


def rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    """The table of one profile, as (measure, value) rows."""
    causes = ", ".join(f"{k}: {v}" for k, v in s["failed_by_cause"].items()) or "-"
    rate = "n/a" if s["success_rate"] is None else f"{s['success_rate']:.2%}"
    refused = str(s["refused_backpressure"])
    if s["refused_retry_after_max"] is not None:
        refused += f" (retry-after up to {s['refused_retry_after_max']:.1f} s)"
    return [
        ("submitted", str(s["submitted"])),
        ("succeeded", str(s["succeeded"])),
        ("served degraded (fallback)", str(s["degraded"])),
        ("failed", str(s["failed"])),
        ("  by cause", causes),
        ("refused with retry-after (Backpressure)", refused),
        ("submit failed (services away, no retry-after)", str(s["submit_errors"])),
        ("cancelled", str(s["cancelled"])),
        (f"lost (not terminal at the deadline, {s['deadline_s']:g} s)", str(s["lost"])),
        ("success rate of accepted (degraded included)", rate),
        ("latency p50 / p95 / p99",
         " / ".join(_num(s[f"latency_p{q}"]) for q in (50, 95, 99))),
        ("provider 429s (seen by the provider)",
         f"{s['provider_429s']} of {s['provider_requests']} requests"),
        ("429s surfaced as failures", str(s["surfaced_429_failures"])),
        ("provider peak in flight per key (limit)",
         f"{s['provider_peak_in_flight']} ({s['provider_concurrency']})"),
        ("lost customer-record updates",
         f"{s['lost_state_updates']} ({s['customers']} customers)"),
        ("max queue depth",
         "n/a" if s["max_queue_depth"] is None else str(s["max_queue_depth"])),
        ("worker-seconds blocked on tools",
         f"{s['tool_blocked_worker_seconds']:g} "
         f"({s['tool_hangs']} hangs in {s['tool_calls']} calls)"),
        *_host_rows(s),
    ]


def _host_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    if len(s["node_hosts"]) < 2 and len(s["claim_owner_hosts"]) < 2:
        return []  # one host: nothing to tell apart
    nodes = ", ".join(f"{node}: {n}" for node, n in s["celery_nodes"].items())
    owners = ", ".join(f"{host}: {n}" for host, n in s["claim_owner_hosts"].items())
    rows = [("tasks per Celery node", nodes or "-")]
    return rows + ([("step claims by owner host", owners)] if owners else [])  # pilot: none


def host_lines(hosts: dict[str, Any]) -> list[str]:
    """One line per simulated host: where it is and what it reached the lab's Redis over."""
    lines = []
    for host in hosts.get("hosts", []):
        reached = hosts.get("redis_reached", {}).get(host["hostname"], {})
        lines.append(f"{host['hostname']}: namespace {host['namespace']}, {host['address']}; "
                     f"Redis over the bridge ({hosts['services_at']}): "
                     f"{'yes' if reached.get('via_bridge') else 'NO'}, over its own "
                     f"loopback: {'YES' if reached.get('via_loopback') else 'no'}")
    return lines


def series(result: ProfileResult, bucket: float) -> dict[str, Any]:
    """Per ``bucket`` seconds: throughput (finished/s), success rate, p95 latency of what
    finished then; per sample: queue depth, 429s/s, breakers open."""
    finished = [o for o in result.outcomes if o.finished is not None]
    end = max([result.deadline] + [o.finished or 0 for o in finished])
    n = int(end // bucket) + 1
    t = [round(i * bucket, 1) for i in range(n)]
    groups: list[list[Any]] = [[] for _ in range(n)]
    for o in finished:
        groups[min(n - 1, int((o.finished or 0) // bucket))].append(o)
    throughput = [len(g) / bucket for g in groups]
    success = [sum(o.served for o in g) / len(g) if g else None for g in groups]
    p95 = [percentile([o.latency for o in g if o.latency is not None], 95) for g in groups]
    st = [s["t"] for s in result.samples]
    depth = [s["depth"] for s in result.samples]
    rate429: list[float | None] = []
    last = None
    for s in result.samples:
        now = s["provider_429s"]
        rate429.append(None if now is None or last is None else max(0, now - last))
        last = now if now is not None else last
    breakers = {name: [1 if s["breakers"].get(name) == "open" else
                       0.5 if s["breakers"].get(name) == "half-open" else 0
                       for s in result.samples]
                for name in sorted({k for s in result.samples for k in s["breakers"]})}
    return {"t": t, "throughput": throughput, "success": success, "p95": p95,
            "sample_t": st, "depth": depth, "rate429": rate429, "breakers": breakers}


def write_json(lab: LabResult, path: Path) -> dict[str, Any]:
    """Everything of the run in one JSON file; returns what it wrote."""
    data = {
        "scenario": {**asdict(lab.scenario), "lab_minute_stands_for_minutes":
                     lab.scenario.lab_minute_stands_for, "description": lab.scenario.describe()},
        "seed": lab.seed,
        "faults": [asdict(f) for f in lab.plan],
        "hosts": lab.hosts,
        "profiles": {p.name: {"summary": summary(p), "faults_applied": p.faults,
                              "samples": p.samples,
                              "outcomes": [{**asdict(o), "fate": o.fate.value}
                                           for o in p.outcomes]}
                     for p in lab.profiles},
    }
    path.write_text(json.dumps(data, indent=1, default=str))
    return data
