"""Worker profiles: one per queue, overridable, bad choices refused."""

from __future__ import annotations

import pytest

from config import load_settings
from orchestrator.telemetry import percentile
from workers.profiles import for_queues, profiles


def test_each_queue_has_its_profile() -> None:
    settings = load_settings(llm_worker_concurrency=40)
    found = profiles(settings)
    assert found["agents"].pool == "prefork"
    assert found["llm"].pool == "threads" and found["llm"].concurrency == 40
    argv = found["llm"].argv()
    assert argv[argv.index("-Q") + 1] == "llm"
    assert argv[argv.index("--prefetch-multiplier") + 1] == "1"


def test_overrides_and_refusals() -> None:
    settings = load_settings()
    custom = for_queues(settings, ["tools"], pool="prefork", concurrency=3)
    assert (custom.pool, custom.concurrency) == ("prefork", 3)
    with pytest.raises(ValueError, match="unknown queue"):
        for_queues(settings, ["gpu"])
    with pytest.raises(ValueError, match="unknown pool"):
        for_queues(settings, ["llm"], pool="fibers")


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 50) is None
