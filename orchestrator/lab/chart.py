"""The PNG of a run: throughput, success rate, p95 latency, queue depth, provider 429s
and breaker states over time, one line per profile, fault windows shaded."""

from __future__ import annotations

import textwrap
from pathlib import Path

from orchestrator.lab.report import series
from orchestrator.lab.runner import LabResult

COLORS = {"pilot": "tab:red", "production": "tab:blue"}


def draw(lab: LabResult, path: Path) -> None:
    """Write the chart to ``path``. Needs matplotlib (the ``[bench]`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bucket = max(2.0, lab.scenario.seconds / 60)
    fig, axes = plt.subplots(6, 1, figsize=(12, 16), sharex=True)
    titles = ["throughput (finished/s)", "success rate (served / finished)",
              "latency p95 of finished (s)", "queue depth", "provider 429s per second",
              "breakers open (1) / half-open (0.5)"]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10, loc="left")
        for i, fault in enumerate(lab.plan):
            ax.axvspan(fault.start, max(fault.end, fault.start + 1), color=f"C{i % 10}",
                       alpha=0.15, label=fault.label if ax is axes[0] else None)
        ax.grid(alpha=0.3)
    for prof in lab.profiles:
        s = series(prof, bucket)
        color = COLORS.get(prof.name, "black")
        axes[0].plot(s["t"], s["throughput"], color=color, label=prof.name)
        axes[1].plot(s["t"], s["success"], color=color, marker=".", label=prof.name)
        axes[2].plot(s["t"], s["p95"], color=color, label=prof.name)
        axes[3].plot(s["sample_t"], s["depth"], color=color, label=prof.name)
        axes[4].plot(s["sample_t"], s["rate429"], color=color, label=prof.name)
        for j, (name, states) in enumerate(s["breakers"].items()):
            axes[5].step(s["sample_t"], [v + 0.02 * j for v in states], where="post",
                         label=f"{prof.name}: {name}")
    axes[1].set_ylim(-0.05, 1.05)
    axes[5].set_ylim(-0.05, 1.15)
    for ax in axes[1:]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper right")
    axes[0].legend(fontsize=7, loc="upper left", ncol=3)
    axes[-1].set_xlabel(f"lab seconds (one lab minute = {lab.scenario.lab_minute_stands_for:g} "
                        f"minutes of the day)")
    fig.suptitle(textwrap.fill(lab.scenario.describe(), 150), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
