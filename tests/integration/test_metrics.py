"""The exporter after a real run: families, labels, windows, and a scrape without
PostgreSQL."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import text

import orchestrator
from config import Settings
from orchestrator import subsystems
from orchestrator.invocation import InvocationStatus
from orchestrator.metrics import registry
from orchestrator.ops.queues import QueueControl
from orchestrator.store.metrics_queries import MetricsQueries
from tests.procs import Fleet, wait_for


def _scrape() -> dict[str, list[Sample]]:
    """Samples by name, from one scrape in Prometheus's text format."""
    text = generate_latest(registry(subsystems.current())).decode()
    found: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def _value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    matching = [s.value for s in samples.get(name, [])
                if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matching) == 1, (name, labels, samples.get(name))
    return matching[0]


@pytest.fixture
def stall_fast(settings: Settings) -> Iterator[Settings]:
    """These settings with a 1 s stall time (the reconciler is not running)."""
    changed = settings.model_copy(update={"stall_seconds": 1})
    orchestrator.configure(changed)
    subsystems.current().load_workflows()
    yield changed


def test_a_run_shows_latency_steps_failures_dead_letters_by_family(
        settings: Settings, fleet: Fleet) -> None:
    subsystems.current().load_workflows()
    before = _scrape()
    done_before = _value(before, "orchestrator_invocation_latency_seconds_bucket",
                         workflow="pipeline-5", status="succeeded", le="+Inf") if any(
        s.labels.get("workflow") == "pipeline-5" and s.labels.get("status") == "succeeded"
        for s in before.get("orchestrator_invocation_latency_seconds_bucket", [])) else 0
    fleet.start("agents", concurrency=2)
    ids = [orchestrator.submit("pipeline-5", {"n": i}) for i in range(4)]
    failing = orchestrator.submit("test-fail", {"reason": "boom"})
    for invocation_id in ids:
        assert orchestrator.wait(invocation_id, timeout=30).status is InvocationStatus.SUCCEEDED
    assert orchestrator.wait(failing, timeout=30).status is InvocationStatus.FAILED

    found = _scrape()
    assert _value(found, "orchestrator_scrape_source_up", source="postgresql") == 1
    assert _value(found, "orchestrator_scrape_source_up", source="redis") == 1
    # Latency: a cumulative histogram of the window, per workflow and status.
    latency = [s for s in found["orchestrator_invocation_latency_seconds_bucket"]
               if s.labels["workflow"] == "pipeline-5" and s.labels["status"] == "succeeded"]
    counts = [s.value for s in latency]
    assert counts == sorted(counts) and latency[-1].labels["le"] == "+Inf"
    assert counts[-1] - done_before >= 4
    assert _value(found, "orchestrator_invocation_latency_seconds_gcount",
                  workflow="pipeline-5", status="succeeded") == counts[-1]
    # Steps: durations by workflow, step and kind; the failed step counted.
    assert _value(found, "orchestrator_step_duration_seconds_bucket", workflow="pipeline-5",
                  step="step-3", kind="python", le="+Inf") >= 4
    assert _value(found, "orchestrator_step_failures", workflow="test-fail", step="explode",
                  kind="python") >= 1
    assert _value(found, "orchestrator_step_failures", workflow="pipeline-5", step="step-1",
                  kind="python") == 0
    assert _value(found, "orchestrator_dead_letters", workflow="test-fail",
                  cause="step raised RuntimeError") >= 1
    assert _value(found, "orchestrator_invocation_tokens_bucket", workflow="pipeline-5",
                  le="+Inf") >= 4
    for queue in ("agents", "llm", "tools"):
        assert _value(found, "orchestrator_queue_paused", queue=queue) == 0
        assert _value(found, "orchestrator_queue_parked", queue=queue) == 0
    for action in ("redispatched", "completed", "failed"):
        assert _value(found, "orchestrator_reconciler_actions_total", action=action) >= 0
    assert _value(found, "orchestrator_metrics_window_seconds") == 300
    # No label carries an invocation id.
    every_label = {v for samples in found.values() for s in samples for v in s.labels.values()}
    assert not every_label & {*ids, failing}


def test_stalled_counts_an_invocation_without_progress_unless_its_queue_is_paused(
        stall_fast: Settings) -> None:
    # (Invocations other tests left unfinished in this database may count too.)
    before = sum(x.value for x in _scrape().get("orchestrator_invocations_stalled", [])
                 if x.labels.get("workflow") == "test-slow")
    invocation_id = orchestrator.submit("test-slow", {"tag": "stalled", "seconds": 0})
    assert wait_for(lambda: _value(_scrape(), "orchestrator_invocations_stalled",
                                   workflow="test-slow") == before + 1, timeout=10)
    sub = subsystems.current()
    control = QueueControl(sub.runtime.redis, sub.runtime.producer)
    control.pause("agents", by="test", reason="metrics")
    found = _scrape()
    assert _value(found, "orchestrator_invocations_stalled", workflow="test-slow") == 0
    assert _value(found, "orchestrator_queue_paused", queue="agents") == 1
    assert _value(found, "orchestrator_queue_depth", queue="agents") == 1
    assert orchestrator.get(invocation_id).status is InvocationStatus.QUEUED


def test_without_postgresql_the_scrape_answers_with_what_redis_knows(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    orchestrator.configure(settings.model_copy(
        update={"database_url": "postgresql+psycopg://postgres@127.0.0.1:9/nowhere"}))
    with caplog.at_level(logging.ERROR, logger="orchestrator.metrics"):
        found = _scrape()
    assert _value(found, "orchestrator_scrape_source_up", source="postgresql") == 0
    assert _value(found, "orchestrator_scrape_source_up", source="redis") == 1
    assert _value(found, "orchestrator_queue_depth", queue="agents") == 0
    assert "orchestrator_invocations" not in found
    assert "orchestrator_invocation_latency_seconds_bucket" not in found
    assert any("postgresql part of this scrape is missing" in r.getMessage()
               for r in caplog.records)


def test_window_histograms_count_a_value_in_the_bucket_of_its_bound(settings: Settings) -> None:
    """``le`` buckets include their bound; a value above every bound is only in +Inf; an
    invocation finished before the window is not counted; steps join their workflow."""
    engine = subsystems.current().runtime.engine
    workflow = f"bounds-{uuid.uuid4().hex[:8]}"
    rows = [(0.5, 0), (1.0, 0), (1.2, 0), (5000.0, 0), (1.0, 900)]  # (latency, ended ago)
    with engine.begin() as conn:
        for i, (latency, ago) in enumerate(rows):
            invocation_id = f"{workflow}-{i}"
            conn.execute(text(
                "INSERT INTO invocations (id, workflow, payload, status, step_count, "
                "prompt_tokens, completion_tokens, created_at, finished_at) VALUES "
                "(:id, :wf, '{}', 'succeeded', 1, 100, 20, "
                "now() - make_interval(secs => :ago + :latency), "
                "now() - make_interval(secs => :ago))"),
                {"id": invocation_id, "wf": workflow, "latency": latency, "ago": ago})
            conn.execute(text(
                "INSERT INTO invocation_steps (invocation_id, idx, name, kind, status, "
                "attempts, fallback, prompt_tokens, completion_tokens, started_at, "
                "finished_at) VALUES (:id, 0, 'only', 'tool', :status, 3, true, 0, 0, "
                "now() - interval '2 seconds', now() - interval '1 second')"),
                {"id": invocation_id, "status": "failed" if i == 0 else "done"})
    figures = MetricsQueries(engine).read(
        window_seconds=300, stall_seconds=600, latency_bounds=(0.5, 1.0, 2.0),
        step_bounds=(0.5, 1.0, 2.0), token_bounds=(100, 120, 200))
    assert figures.latency.buckets((workflow, "succeeded")) == [
        ("0.5", 1), ("1.0", 2), ("2.0", 3), ("+Inf", 4)]
    assert figures.latency.sums[(workflow, "succeeded")] == pytest.approx(5002.7, abs=0.1)
    assert figures.tokens.buckets((workflow,)) == [
        ("100.0", 0), ("120.0", 4), ("200.0", 4), ("+Inf", 4)]
    assert figures.step_duration.buckets((workflow, "only", "tool")) == [
        ("0.5", 0), ("1.0", 4), ("2.0", 4), ("+Inf", 4)]
    outcome = figures.step_outcomes[(workflow, "only", "tool")]
    assert (outcome.failed, outcome.retries, outcome.fallbacks) == (1, 8, 4)
    assert (workflow, "succeeded", 5) in figures.invocations


def _write_back_quantiles() -> dict[str, float]:
    return {s.labels["quantile"]: s.value
            for s in _scrape().get("orchestrator_state_update_seconds", [])
            if s.labels.get("mode") == "write-back"}


def test_state_update_latency_of_a_writer_that_ended_is_in_the_scrape(
        settings: Settings) -> None:
    """Update latencies are sampled and kept in the writer's process, then pushed
    together: a writer process that ends normally pushes what it holds."""
    writer = (
        "import orchestrator\n"
        "from orchestrator import state\n"
        "for i in range(400):\n"
        "    state.update(f'customer:metrics:{i % 7}', lambda v: {'n': v.get('n', 0) + 1})\n"
    )
    env = {**os.environ, **settings.environment()}
    subprocess.run([sys.executable, "-c", writer], env=env, check=True, timeout=120)
    quantiles = _write_back_quantiles()
    assert set(quantiles) == {"0.50", "0.90", "0.99"}
    assert 0 < quantiles["0.50"] <= quantiles["0.99"] < 5


def test_state_update_latency_of_an_idle_writer_reaches_the_scrape_within_seconds(
        settings: Settings) -> None:
    """A writer that goes quiet with fewer samples than a push holds still gets them to
    the scrape: a timer pushes them about a second after the first one."""
    from orchestrator import state

    for i in range(120):  # ~12 samples kept: well below a push's 64
        state.update(f"customer:idle:{i % 3}", lambda v: {"n": v.get("n", 0) + 1})
    assert wait_for(lambda: bool(_write_back_quantiles()), timeout=5)
