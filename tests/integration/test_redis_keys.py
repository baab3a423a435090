"""What finished invocations leave in Redis: nothing that lives for ever.

Every key an invocation writes (its in-flight hash, the broker's per-message entries,
counters) either expires or is deleted once it ends; keys without an expiry are the
fleet's own (queues, bindings, counters), and neither their number nor their size grows
with the invocations that went through.
"""

from __future__ import annotations

import redis

import orchestrator
from config import Settings
from orchestrator import subsystems
from orchestrator.invocation import InvocationStatus
from tests.procs import Fleet

_SIZE = {b"hash": "hlen", b"list": "llen", b"set": "scard", b"zset": "zcard",
         b"stream": "xlen", b"string": "strlen"}


def _persistent(client: redis.Redis) -> dict[str, int]:
    """Keys without an expiry, with their size (fields, items or bytes)."""
    found: dict[str, int] = {}
    for key in client.scan_iter(count=1000):
        if client.ttl(key) != -1:
            continue
        kind = client.type(key)
        found[key.decode()] = int(getattr(client, _SIZE[kind])(key)) if kind in _SIZE else 0
    return found


def _run(count: int, start: int) -> list[str]:
    ids = [orchestrator.submit("pipeline-5", {"n": start + i}) for i in range(count)]
    ids.append(orchestrator.submit("test-fail", {"reason": f"boom {start}"}))
    for invocation_id in ids:
        assert orchestrator.wait(invocation_id, timeout=60).status in (
            InvocationStatus.SUCCEEDED, InvocationStatus.FAILED)
    return ids


def test_finished_invocations_leave_no_redis_key_without_expiry(
        settings: Settings, fleet: Fleet) -> None:
    subsystems.current().load_workflows()
    client = redis.Redis.from_url(settings.redis_url or "")
    fleet.start("agents", concurrency=2)
    # A first round creates the fleet's own keys (queues, bindings, counters).
    _run(3, 0)
    before = _persistent(client)
    ids = _run(20, 100)

    after = _persistent(client)
    per_invocation = [k for k in client.scan_iter(count=1000)
                      if any(i in k.decode() for i in ids) and client.ttl(k) == -1]
    assert per_invocation == []
    assert sorted(set(after) - set(before)) == []
    grown = {k: (before[k], n) for k, n in after.items() if n > before.get(k, 0)
             and not k.startswith("orch:metrics:")}
    assert grown == {}
    # The in-flight hashes of finished invocations expire (they outlive the end so a
    # late duplicate delivery still finds its step done).
    for invocation_id in ids:
        ttl = client.ttl(subsystems.current().claims.key(invocation_id))
        assert ttl > 0
