"""Step claims, run on both implementations: Redis (the Lua of execution/lua/) and the
in-memory fake that unit tests use, so the fake cannot drift from the Lua.

Time passes by the memory clock, or by waiting for Redis's (leases here are short).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis

from orchestrator.execution.claims import BeginState, RedisStepClaims, StepClaims
from orchestrator.testing import ManualClock, MemoryStepClaims

LEASE = 0.4


@dataclass
class Backend:
    claims: StepClaims
    wait: Callable[[float], None]
    now_ms: Callable[[], int]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        clock = ManualClock()
        yield Backend(MemoryStepClaims(visibility_timeout=20, clock=clock), clock.advance,
                      lambda: int(clock() * 1000))
        return
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))

    def now_ms() -> int:
        seconds, micros = client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    try:
        yield Backend(RedisStepClaims(client, visibility_timeout=20), time.sleep, now_ms)
    finally:
        client.close()


@pytest.fixture
def inv() -> str:
    return f"inv-{uuid.uuid4().hex[:8]}"


def _record(output: object, status: str = "done") -> dict[str, object]:
    return {"name": "s", "kind": "python", "status": status, "attempts": 1, "output": output,
            "error": None, "fallback": False, "pt": 0, "ct": 0, "started_ms": 1,
            "finished_ms": 2}


def test_fresh_step_is_claimed_at_the_stores_time(backend: Backend, inv: str) -> None:
    before = backend.now_ms()
    begin = backend.claims.begin(inv, 0, "w1", LEASE)
    assert begin.state is BeginState.CLAIMED
    assert (begin.previous, begin.deaths, begin.took_over) == ("", 0, False)
    assert before <= begin.now_ms <= backend.now_ms()
    assert backend.claims.snapshot(inv) == (False, {}, {0})


def test_claimed_step_is_busy_for_others_until_its_lease_ends(
    backend: Backend, inv: str
) -> None:
    backend.claims.begin(inv, 0, "w1", LEASE)
    busy = backend.claims.begin(inv, 0, "w2", LEASE)
    assert (busy.state, busy.holder) == (BeginState.BUSY, "w1")
    assert 0 < busy.remaining <= LEASE
    backend.wait(LEASE + 0.05)
    taken = backend.claims.begin(inv, 0, "w2", LEASE)
    assert (taken.state, taken.previous, taken.deaths) == (BeginState.CLAIMED, "w1", 1)


def test_only_the_named_holder_can_be_stolen_from(backend: Backend, inv: str) -> None:
    backend.claims.begin(inv, 0, "w1", 60)
    wrong = backend.claims.begin(inv, 0, "w2", 60, steal="w9")
    assert wrong.state is BeginState.BUSY
    stolen = backend.claims.begin(inv, 0, "w2", 60, steal="w1")
    assert (stolen.state, stolen.previous, stolen.deaths) == (BeginState.CLAIMED, "w1", 1)
    again = backend.claims.begin(inv, 0, "w3", 60, steal="w2")
    assert again.deaths == 2  # every takeover of a claim left behind counts


def test_first_result_recorded_stands(backend: Backend, inv: str) -> None:
    backend.claims.begin(inv, 0, "w1", LEASE)
    first = backend.claims.finish(inv, 0, "w1", _record("first"), queue="agents")
    late = backend.claims.finish(inv, 0, "w2", _record("late"), queue="agents")
    assert first["output"] == late["output"] == "first"
    done = backend.claims.begin(inv, 0, "w3", LEASE)
    assert done.state is BeginState.DONE and done.record == _record("first")
    assert backend.claims.snapshot(inv) == (False, {0: _record("first")}, set())


def test_late_finish_of_another_owner_leaves_the_current_claim(
    backend: Backend, inv: str
) -> None:
    backend.claims.begin(inv, 1, "w2", 60)
    backend.claims.finish(inv, 1, "w1", _record("from a late delivery"), queue="agents")
    # Done now: the claim stays in the hash but the step no longer counts as running.
    assert backend.claims.snapshot(inv)[2] == set()
    assert backend.claims.begin(inv, 1, "w3", 60).state is BeginState.DONE


def test_release_frees_the_claim_only_for_its_holder(backend: Backend, inv: str) -> None:
    backend.claims.begin(inv, 0, "w1", 60)
    backend.claims.release(inv, 0, "w2")
    assert backend.claims.begin(inv, 0, "w2", 60).state is BeginState.BUSY
    backend.claims.release(inv, 0, "w1")
    fresh = backend.claims.begin(inv, 0, "w2", 60)
    assert (fresh.state, fresh.previous) == (BeginState.CLAIMED, "")


def test_renewal_extends_only_claims_still_held(backend: Backend, inv: str) -> None:
    backend.claims.begin(inv, 0, "w1", LEASE)
    backend.claims.begin(inv, 1, "w2", 60)
    assert backend.claims.renew([(inv, 0, "w1"), (inv, 1, "w1"), (inv, 2, "w1")], 60) == [
        True, False, False]
    backend.wait(LEASE + 0.05)
    assert backend.claims.begin(inv, 0, "w3", LEASE).state is BeginState.BUSY
    assert backend.claims.renew([], 60) == []


def test_claim_of_the_last_step_brings_the_records_of_the_others(
    backend: Backend, inv: str
) -> None:
    for index in (0, 1):
        backend.claims.begin(inv, index, "w1", 60)
        backend.claims.finish(inv, index, "w1", _record(index), queue="agents")
    last = backend.claims.begin(inv, 2, "w1", 60, with_records=True)
    assert last.records == {0: _record(0), 1: _record(1)}
    assert backend.claims.begin(inv, 3, "w1", 60).records is None


def test_one_publisher_per_invocation_unless_it_went_silent(
    backend: Backend, inv: str
) -> None:
    assert backend.claims.claim_dispatch(inv, stale_after=LEASE)
    assert not backend.claims.claim_dispatch(inv, stale_after=LEASE)
    backend.wait(LEASE + 0.05)
    assert backend.claims.claim_dispatch(inv, stale_after=LEASE)  # the first one died
    backend.claims.mark_dispatched(inv)
    backend.wait(LEASE + 0.05)
    assert not backend.claims.claim_dispatch(inv, stale_after=LEASE)
    assert backend.claims.snapshot(inv)[0] is True


def test_forgotten_invocation_has_nothing_in_flight(backend: Backend, inv: str) -> None:
    backend.claims.claim_dispatch(inv)
    backend.claims.begin(inv, 0, "w1", 60)
    backend.claims.forget(inv)
    assert backend.claims.snapshot(inv) == (False, {}, set())
    assert backend.claims.claim_dispatch(inv)
