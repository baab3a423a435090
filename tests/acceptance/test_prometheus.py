"""A real Prometheus scrapes ``orchestrator metrics`` during a real run, and every query of
the Grafana dashboard returns data from it.

Needs the ``prometheus`` binary (Debian's package; ``scripts/test.sh`` installs it where
apt is available); skipped, saying so, where it is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import orchestrator
from config import Settings
from orchestrator import runtime
from orchestrator.devstack.processes import stop_group
from orchestrator.devstack.servers.ports import free_port
from orchestrator.invocation import InvocationStatus
from orchestrator.ops.queues import QueueControl
from tests.procs import Fleet, wait_for

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
PROMETHEUS_CONFIG = REPO / "config" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO / "config" / "grafana" / "dashboards" / "orchestrator.json"
SCRAPE_SECONDS = 2
# Where to keep the chart of the run (the README's: ORCH_TEST_CHART=docs/metrics-run.png).
CHART = Path(os.environ["ORCH_TEST_CHART"]) if os.environ.get("ORCH_TEST_CHART") else None

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="the prometheus binary is missing: apt-get install prometheus "
           "(scripts/test.sh installs it where apt is available)")


@contextmanager
def _running(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own group, its output in ``log``; always stopped."""
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **env, "PYTHONPATH": str(REPO)},
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc, signal.SIGTERM, 10, whole_group=True)


def _prometheus_config(target: str, path: Path) -> Path:
    """The project's Prometheus configuration, scraping ``target`` every few seconds."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval=f"{SCRAPE_SECONDS}s",
                            scrape_timeout=f"{SCRAPE_SECONDS}s")
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "orchestrator"]
    job["static_configs"] = [{"targets": [target]}]
    path.write_text(yaml.safe_dump(config))
    return path


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every target of every panel of the dashboard."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p["targets"]]


def _query(base: str, expr: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
    body = reply.json()
    assert reply.status_code == 200 and body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


def _waves() -> list[str]:
    """Submit the run's invocations in waves; returns their ids. The README's run
    (``ORCH_TEST_CHART`` set) is longer, and pauses the llm queue for a while."""
    sizes = [40, 80, 40, 120, 40, 80, 40, 120, 40, 40, 40, 40] if CHART else [40, 40, 40]
    control = QueueControl(runtime.current().redis, runtime.current().producer)
    ids = []
    for wave, size in enumerate(sizes):
        if CHART and wave == 5:
            control.pause("llm", by="test_prometheus", reason="the README's run")
        if CHART and wave == 8:
            control.resume("llm")
        ids += [orchestrator.submit("support-triage", {
            "customer_id": f"prom-{i % 10}", "ticket_id": f"w{wave}-t{i}",
            "message": "my order has not arrived"}) for i in range(size)]
        time.sleep(10 if CHART else 4)
    return ids


def test_every_dashboard_query_returns_data_from_a_real_prometheus(
        settings: Settings, simulators: tuple[str, str], fleet: Fleet,
        tmp_path: Path) -> None:
    assert PROMETHEUS is not None
    env = settings.environment()
    metrics_port, web_port = free_port(), free_port()
    base = f"http://127.0.0.1:{web_port}"
    config = _prometheus_config(f"127.0.0.1:{metrics_port}", tmp_path / "prometheus.yml")
    exporter_log, prometheus_log = tmp_path / "metrics.log", tmp_path / "prometheus.log"
    fleet.start_all_profiles()
    with (
        _running([sys.executable, "-m", "orchestrator.cli.app", "metrics", "--port",
                  str(metrics_port)], env, exporter_log),
        _running([PROMETHEUS, f"--config.file={config}",
                  f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                  f"--web.listen-address=127.0.0.1:{web_port}"], {}, prometheus_log),
    ):
        assert wait_for(lambda: b"metrics on" in exporter_log.read_bytes(), 30), \
            exporter_log.read_text()
        assert wait_for(lambda: _ready(base), 30), prometheus_log.read_text()[-3000:]
        started = time.time()
        # A real run in waves (support-triage: state, LLM, tool, LLM, state), and one
        # invocation that fails, so dead letters have a cause to show.
        failing = orchestrator.submit("test-fail", {"reason": "boom"})
        ids = _waves()
        for invocation_id in ids:
            assert orchestrator.wait(invocation_id, timeout=120).status is \
                InvocationStatus.SUCCEEDED
        assert orchestrator.wait(failing, timeout=30).status is InvocationStatus.FAILED
        # Scrapes after the end: every figure of the run is in Prometheus.
        finished = time.time()
        assert wait_for(lambda: _scraped_since(base, finished), 30), \
            exporter_log.read_text()[-3000:]

        empty = [(title, expr) for title, expr in dashboard_queries()
                 if not _query(base, expr)]
        assert not empty, f"dashboard queries without data: {empty}"
        up = {r["metric"]["source"]: r["value"][1]
              for r in _query(base, "orchestrator_scrape_source_up")}
        assert up == {"redis": "1", "state": "1", "postgresql": "1"}

        # The chart of the run, drawn from the dashboard's queries as a user draws it.
        chart = CHART or tmp_path / "metrics-run.png"
        drawn = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "chart_metrics.py"), "--prometheus", base,
             "--minutes", f"{(time.time() - started + 10) / 60:.2f}", "--out", str(chart)],
            capture_output=True, text=True, timeout=120, cwd=REPO)
        assert drawn.returncode == 0, drawn.stderr
        assert chart.stat().st_size > 10_000


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _scraped_since(base: str, moment: float) -> bool:
    """Whether Prometheus holds a successful scrape of the exporter newer than
    ``moment`` (and a second one: rates need two)."""
    found = _query(base, f'count_over_time(up{{job="orchestrator"}}[{SCRAPE_SECONDS * 3}s])')
    newest = _query(base, 'timestamp(up{job="orchestrator"} == 1)')
    return bool(found and newest and float(found[0]["value"][1]) >= 2
                and float(newest[0]["value"][1]) > moment + SCRAPE_SECONDS)


def test_the_prometheus_configuration_is_valid() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing (it comes with Debian's prometheus package)")
    checked = subprocess.run([promtool, "check", "config", str(PROMETHEUS_CONFIG)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
