"""Chart a run from Prometheus with the Grafana dashboard's own queries.

    python scripts/chart_metrics.py --prometheus http://127.0.0.1:9090 --minutes 10 \\
        --out docs/metrics-run.png

Each chart is one panel of ``config/grafana/dashboards/orchestrator.json`` (by title),
every target of it run through Prometheus's ``/api/v1/query_range`` over the last
``--minutes``: what Grafana would draw, without Grafana. The README's chart of a real run
(``docs/metrics-run.png``) comes from here; ``tests/acceptance/test_prometheus.py`` draws
it after its run (``ORCH_TEST_CHART=docs/metrics-run.png`` keeps it).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = REPO / "config" / "grafana" / "dashboards" / "orchestrator.json"
# The panels charted, by title (in this order, two a row).
PANELS = (
    "Invocations finished / s by status (last 5 min)",
    "Invocation latency p50/p99 (last 5 min)",
    "Queue depth",
    "Step duration p95 (last 5 min)",
    "LLM tokens / s",
    "Paused queues and parked messages",
)
MAX_LINES = 8  # per chart; the largest series are kept


def panels(titles: tuple[str, ...] = PANELS) -> list[dict[str, Any]]:
    """The dashboard's panels with these titles, in this order; raises ``KeyError``
    naming a title the dashboard does not have."""
    found = {p["title"]: p for p in json.loads(DASHBOARD.read_text())["panels"]}
    return [found[title] for title in titles]


def _legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""),
                  template).strip() or json.dumps(labels)


def query_range(prometheus: str, expr: str, start: float, end: float,
                step: float) -> list[tuple[str, list[float], list[float]]]:
    """(labels as JSON, times, values) of each series ``expr`` returns; NaN points are
    left out."""
    reply = httpx.get(f"{prometheus}/api/v1/query_range", timeout=30,
                      params={"query": expr, "start": start, "end": end, "step": step})
    reply.raise_for_status()
    series = []
    for result in reply.json()["data"]["result"]:
        points = [(float(t), float(v)) for t, v in result["values"]
                  if not math.isnan(float(v))]
        series.append((json.dumps(result["metric"]), [t for t, _ in points],
                       [v for _, v in points]))
    return series


def draw(prometheus: str, out: Path, *, start: float, end: float | None = None,
         title: str = "agent-orchestrator: a run, from Prometheus") -> int:
    """Draw the charted panels from ``start`` to ``end`` (Unix times; default now) to
    ``out`` (PNG); returns how many series were drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = end or time.time()
    step = max(1.0, (end - start) / 300)
    chosen = panels()
    rows = math.ceil(len(chosen) / 2)
    fig, axes = plt.subplots(rows, 2, figsize=(14, 3.6 * rows), squeeze=False)
    drawn = 0
    for ax, panel in zip(axes.flat, chosen, strict=False):
        lines = []
        for target in panel["targets"]:
            for labels, times, values in query_range(prometheus, target["expr"], start, end,
                                                     step):
                if values:
                    legend = _legend(target.get("legendFormat", ""), json.loads(labels))
                    lines.append((max(values), legend, times, values))
        for _, legend, times, values in sorted(lines, reverse=True)[:MAX_LINES]:
            ax.plot([(t - start) / 60 for t in times], values, label=legend, linewidth=1.4)
            drawn += 1
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlabel("minutes from the start", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if lines:
            ax.legend(fontsize=7, loc="upper left")
        unit = (panel.get("fieldConfig") or {}).get("defaults", {}).get("unit")
        if unit:
            ax.set_ylabel({"s": "seconds", "ops": "per second"}.get(unit, unit), fontsize=8)
    for ax in list(axes.flat)[len(chosen):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090",
                        help="Prometheus base URL")
    parser.add_argument("--minutes", type=float, default=10.0, help="how far back to chart")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "metrics-run.png",
                        help="PNG to write")
    args = parser.parse_args()
    drawn = draw(args.prometheus.rstrip("/"), args.out, start=time.time() - args.minutes * 60)
    print(f"{args.out}: {drawn} series")


if __name__ == "__main__":
    main()
