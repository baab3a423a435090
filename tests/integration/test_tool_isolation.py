"""A tool that hangs takes only its own threads: its neighbours in the same worker answer
as if nothing happened. Real worker process, real Redis and PostgreSQL."""

from __future__ import annotations

import re

import pytest
import redis
from prometheus_client import generate_latest

import orchestrator
from config import Settings
from orchestrator import subsystems
from orchestrator.invocation import InvocationStatus
from orchestrator.metrics import registry
from orchestrator.tools.registry import tools
from tests.procs import Fleet, wait_for


def _breaker_status(name: str) -> tuple[str, int, int]:
    status = subsystems.current().breakers.get(name, tools.get(name).breaker).status()
    return status.state, status.calls, status.failures


@pytest.mark.timeout(180)
def test_healthy_tool_answers_normally_after_100_hung_calls_of_another(
    settings: Settings, fleet: Fleet
) -> None:
    client = redis.Redis.from_url(settings.redis_url or "")
    fleet.start("tools", pool="threads", concurrency=16)
    warm = orchestrator.wait(orchestrator.submit("test-healthy-tool", {"q": 1}), timeout=30)
    assert warm.output == {"answer": 2}

    # 100 calls of test_hang, each hanging far past its 0.3 s timeout (for
    # tests.workflows.HANG_SECONDS, longer than this test): its breaker opens once 100
    # calls are in its window, at least half of them failed.
    for i in range(100):
        orchestrator.submit("test-hang-tool", {"q": i})
    assert wait_for(lambda: _breaker_status("test_hang")[0] == "open", timeout=90), \
        _breaker_status("test_hang")

    # The healthy tool, same worker, right after: normal answers, at normal speed.
    done = [orchestrator.wait(orchestrator.submit("test-healthy-tool", {"q": i}), timeout=60)
            for i in range(20)]
    assert all(d.status is InvocationStatus.SUCCEEDED for d in done)
    assert [d.output for d in done] == [{"answer": 2 * i} for i in range(20)]
    steps = [d.steps[0] for d in done]
    assert not any(s.fallback for s in steps)
    assert all(s.attempts == 1 for s in steps), [s.attempts for s in steps]
    assert max(s.duration or 0 for s in steps) < 0.5
    state, _, failures = _breaker_status("test_healthy")
    assert state == "closed" and failures == 0

    # The hanging tool held its own four threads, no more (none has returned
    # yet): its other calls failed fast.
    assert int(client.get("test:hang-started") or 0) == 4
    exposed = generate_latest(registry(subsystems.current())).decode()
    hung = re.search(r'^orchestrator_tool_hung_threads_total\{tool="test_hang"\} (\S+)$',
                     exposed, re.MULTILINE)
    assert hung is not None and float(hung.group(1)) == 4.0
