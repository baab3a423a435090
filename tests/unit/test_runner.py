"""The step runner's every decision, against the in-memory fakes of orchestrator.testing.

Each test builds a small workflow, runs deliveries of its steps as the Celery tasks would
(the context each returns goes to the next), and looks at what a user relies on: what is
returned or raised, what the claims say, what the invocation store ends up holding.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis
from pydantic import BaseModel

from orchestrator.breakers import Breakers, MemoryBreakerStore
from orchestrator.errors import (
    InvocationCancelled,
    ProviderOutage,
    RetryLater,
    StepFailed,
    TransientStepError,
)
from orchestrator.execution.claims import Handoff
from orchestrator.execution.heartbeat import Heartbeat
from orchestrator.execution.runner import Delivery, RunnerPolicy, StepRunner, handed_off
from orchestrator.execution.steps import StepExecutor
from orchestrator.invocation import InvocationStatus, StepStatus
from orchestrator.llm.client import ChatResult
from orchestrator.llm.gateway import Completion
from orchestrator.testing import (
    FixedIdentity,
    ManualClock,
    MemoryInvocationStore,
    MemoryStepClaims,
)
from orchestrator.tools import invoke
from orchestrator.tools.invoke import ToolInvoker
from orchestrator.tools.pools import ToolPools
from orchestrator.tools.registry import ToolRegistry
from orchestrator.workflow import Registry, StepContext, Workflow

Context = dict[str, Any]
POLICY = RunnerPolicy(lease_seconds=8, max_retries=3, visibility_timeout=20,
                      record_retry_seconds=0.0)


class Ticket(BaseModel):
    ticket: str = "T-1"


class NoTools:
    def invoke(self, name: str, payload: dict[str, Any], *,
               last_attempt: bool) -> invoke.ToolOutcome:
        raise AssertionError(f"no tool expected, {name} was called")


class CannedLLM:
    """Answers every completion with ``content`` and the given token counts."""

    def __init__(self, content: str = "ok", prompt: int = 12, completion: int = 5) -> None:
        self.result = ChatResult(content, "sim", prompt, completion)

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int,
                 temperature: float = 0.0,
                 should_stop: Callable[[], bool] | None = None) -> Completion:
        return Completion(self.result, "primary", "k-1", 0.0, 1)


@dataclass
class Fleet:
    """One workflow, the fakes it runs on, and the deliveries made so far."""

    flow: Workflow
    clock: ManualClock = field(default_factory=ManualClock)
    identity: FixedIdentity = field(default_factory=lambda: FixedIdentity("w1"))
    executor: Any = None
    policy: RunnerPolicy = POLICY
    claims: MemoryStepClaims = field(init=False)
    store: MemoryInvocationStore = field(init=False)
    runner: StepRunner = field(init=False)

    def __post_init__(self) -> None:
        self.claims = MemoryStepClaims(visibility_timeout=20, clock=self.clock)
        self.store = MemoryInvocationStore(self.clock)
        workflows = Registry()
        workflows.add(self.flow)
        self.runner = StepRunner(
            claims=self.claims, store=self.store,
            executor=self.executor or StepExecutor(llm=CannedLLM(), tools=NoTools()),
            identity=self.identity, workflows=workflows, policy=self.policy,
            heartbeat=Heartbeat(self.claims, self.store, lease_seconds=8, tick=3600),
            sleep=lambda seconds: None)

    def submit(self, payload: dict[str, Any] | None = None) -> Context:
        invocation_id, _ = self.store.create(
            invocation_id=f"inv-{next(_ids)}", workflow=self.flow.name,
            payload_json=json.dumps(payload or {"ticket": "T-1"}),
            step_count=len(self.flow.steps), idempotency_key=None)
        return {"invocation_id": invocation_id, "workflow": self.flow.name,
                "payload": payload or {"ticket": "T-1"}, "outputs": {}}

    def run(self, context: Context, index: int, attempts: int = 0,
            held_since_ms: int | None = None) -> Context:
        return self.runner.run(context, index, Delivery(attempts, held_since_ms))

    def run_all(self, context: Context) -> Context:
        for index in range(len(self.flow.steps)):
            context = self.run(context, index)
        return context


_ids = itertools.count(1)


def _flow(*steps: tuple[str, Callable[[StepContext], Any]]) -> Workflow:
    flow = Workflow(f"unit-{next(_ids)}", payload=Ticket, register=False)
    for name, fn in steps:
        flow.python(name, fn)
    return flow


def _counted(output: Any = None) -> tuple[Callable[[StepContext], Any], list[StepContext]]:
    calls: list[StepContext] = []

    def step(ctx: StepContext) -> Any:
        calls.append(ctx)
        return {"call": len(calls)} if output is None else output

    return step, calls


def _raising(*errors: BaseException) -> Callable[[StepContext], Any]:
    """A step that raises ``errors`` in turn, then returns ``{"ok": True}``."""
    pending = list(errors)

    def step(ctx: StepContext) -> Any:
        if pending:
            raise pending.pop(0)
        return {"ok": True}

    return step


def test_step_output_goes_into_the_context_of_the_next_step() -> None:
    seen: list[dict[str, Any]] = []

    def use(ctx: StepContext) -> str:
        seen.append(dict(ctx.outputs))
        return "done"

    fleet = Fleet(_flow(("load", lambda ctx: {"ticket": ctx.payload.model_dump()["ticket"]}),
                        ("use", use)))
    context = fleet.run(fleet.submit(), 0)
    assert context["outputs"] == {"load": {"ticket": "T-1"}}
    fleet.run(context, 1)
    assert seen == [{"load": {"ticket": "T-1"}}]


def test_redelivered_done_step_is_skipped_and_its_recorded_output_passed_on() -> None:
    step, calls = _counted()
    fleet = Fleet(_flow(("first", step), ("second", lambda ctx: None)))
    context = fleet.submit()
    first = fleet.run(context, 0)
    again = fleet.run(context, 0)  # the same message, delivered twice
    assert len(calls) == 1
    assert again["outputs"] == first["outputs"] == {"first": {"call": 1}}


def _next_messages(built: list[Context]) -> Callable[[Context], Handoff]:
    def build(passed: Context) -> Handoff:
        built.append(passed)
        return Handoff("agents", json.dumps(passed))
    return build


def test_next_steps_message_is_pushed_with_the_record_of_the_step_before_it() -> None:
    fleet = Fleet(_flow(("first", lambda ctx: 1), ("second", lambda ctx: 2)))
    built: list[Context] = []
    handed_off.set(False)
    context = fleet.runner.run(fleet.submit(), 0, handoff=_next_messages(built))
    assert handed_off.get()
    assert built == [context]
    assert [json.loads(h.message) for h in fleet.claims.handed_off] == [context]


def test_redelivered_step_does_not_hand_its_successor_off_twice() -> None:
    fleet = Fleet(_flow(("first", lambda ctx: 1), ("second", lambda ctx: 2)))
    context = fleet.submit()
    first = fleet.runner.run(context, 0, handoff=_next_messages([]))
    handed_off.set(False)
    again = fleet.runner.run(context, 0, handoff=_next_messages([]))
    assert again == first
    assert handed_off.get()  # the record says its message went with it: Celery sends none
    assert len(fleet.claims.handed_off) == 1


def test_last_step_and_failed_steps_hand_nothing_off() -> None:
    fleet = Fleet(_flow(("first", lambda ctx: 1), ("last", lambda ctx: 2)))
    built: list[Context] = []
    context = fleet.runner.run(fleet.submit(), 0, handoff=_next_messages(built))
    handed_off.set(False)
    fleet.runner.run(context, 1, handoff=_next_messages(built))
    assert not handed_off.get() and len(built) == 1
    failing = Fleet(_flow(("boom", _raising(ValueError("no"))), ("after", lambda ctx: 0)))
    with pytest.raises(StepFailed):
        failing.runner.run(failing.submit(), 0, handoff=_next_messages(built))
    assert failing.claims.handed_off == [] and len(built) == 1


def test_step_recorded_without_its_successor_leaves_the_chain_to_celery() -> None:
    fleet = Fleet(_flow(("first", lambda ctx: 1), ("second", lambda ctx: 2)))
    context = fleet.submit()
    fleet.run(context, 0)  # recorded by a delivery that handed nothing off
    handed_off.set(False)
    fleet.runner.run(context, 0, handoff=_next_messages([]))
    assert not handed_off.get()


def test_redelivery_of_a_step_recorded_failed_fails_without_running_it() -> None:
    parsed: list[str] = []

    def parse(ctx: StepContext) -> int:
        parsed.append("called")
        return int("x")

    fleet = Fleet(_flow(("ok", lambda ctx: 1), ("parse", parse), ("after", lambda ctx: 2)))
    context = fleet.run(fleet.submit(), 0)
    with pytest.raises(StepFailed):
        fleet.run(context, 1)
    with pytest.raises(StepFailed, match="failed at step parse"):
        fleet.run(context, 1)
    assert parsed == ["called"]


@pytest.mark.parametrize(
    ("lease", "elapsed", "countdown"),
    [(8.0, 2.0, 6.5),     # the holder's lease left, and half a second
     (100.0, 0.0, 10.0),  # never longer than half the visibility timeout
     (8.0, 7.9, 1.0)],    # never sooner than a second
)
def test_busy_step_is_retried_after_the_holders_lease(
    lease: float, elapsed: float, countdown: float
) -> None:
    step, calls = _counted()
    fleet = Fleet(_flow(("work", step)))
    context = fleet.submit()
    fleet.claims.begin(context["invocation_id"], 0, "w2", lease)
    fleet.clock.advance(elapsed)
    with pytest.raises(RetryLater) as caught:
        fleet.run(context, 0, attempts=1)
    assert caught.value.countdown == pytest.approx(countdown)
    assert caught.value.attempts == 1  # waiting for a holder spends no attempt
    assert calls == []
    assert fleet.claims.snapshot(context["invocation_id"])[2] == {0}  # still w2's


def test_claim_of_a_dead_holder_is_taken_over_at_once() -> None:
    step, calls = _counted()
    fleet = Fleet(_flow(("work", step), ("next", lambda ctx: None)),
                  identity=FixedIdentity("w1", dead={"w-dead"}))
    context = fleet.submit()
    fleet.claims.begin(context["invocation_id"], 0, "w-dead", 300)
    assert fleet.run(context, 0)["outputs"] == {"work": {"call": 1}}
    assert len(calls) == 1
    _, records, running = fleet.claims.snapshot(context["invocation_id"])
    assert records[0]["status"] == "done" and running == set()


def test_claim_whose_lease_ran_out_is_taken_over() -> None:
    step, calls = _counted()
    fleet = Fleet(_flow(("work", step), ("next", lambda ctx: None)))
    context = fleet.submit()
    fleet.claims.begin(context["invocation_id"], 0, "w-silent", 8)
    fleet.clock.advance(8.5)
    fleet.run(context, 0)
    assert len(calls) == 1


def test_takeover_after_a_succeeded_end_returns_the_context_without_running_again() -> None:
    step, calls = _counted()
    fleet = Fleet(_flow(("only", step)), identity=FixedIdentity("w1", dead={"w-dead"}))
    context = fleet.submit()
    invocation_id = context["invocation_id"]
    # The dead delivery wrote the end to PostgreSQL, then died before recording in Redis.
    fleet.claims.begin(invocation_id, 0, "w-dead", 300)
    fleet.store.complete(invocation_id, status=InvocationStatus.SUCCEEDED, output={"x": 1},
                         error=None, steps=[])
    assert fleet.run(context, 0) == context
    assert calls == []
    assert fleet.claims.snapshot(invocation_id)[2] == set()  # claim released


def test_takeover_after_a_failed_end_fails_the_delivery() -> None:
    step, calls = _counted()
    fleet = Fleet(_flow(("only", step)), identity=FixedIdentity("w1", dead={"w-dead"}))
    context = fleet.submit()
    invocation_id = context["invocation_id"]
    fleet.claims.begin(invocation_id, 0, "w-dead", 300)
    fleet.store.complete(invocation_id, status=InvocationStatus.FAILED, output=None,
                         error="boom", steps=[])
    with pytest.raises(StepFailed, match="has failed"):
        fleet.run(context, 0)
    assert calls == []


def test_transient_error_is_retried_later_and_frees_the_claim_for_the_retry() -> None:
    fleet = Fleet(_flow(("call", _raising(TransientStepError("tool timed out")))))
    context = fleet.submit()
    with pytest.raises(RetryLater) as caught:
        fleet.run(context, 0)
    assert "step call: tool timed out" in str(caught.value)
    assert caught.value.attempts == 1
    assert 0 < caught.value.countdown <= POLICY.visibility_timeout / 2
    _, records, running = fleet.claims.snapshot(context["invocation_id"])
    assert records == {} and running == set()
    assert fleet.run(context, 0, attempts=1)["outputs"] == {"call": {"ok": True}}


def test_transient_errors_retry_after_is_honoured() -> None:
    fleet = Fleet(_flow(("call", _raising(TransientStepError("429", retry_after=3.0)))))
    with pytest.raises(RetryLater) as caught:
        fleet.run(fleet.submit(), 0)
    assert caught.value.countdown == 3.0


def test_retry_delay_is_bounded_by_half_the_visibility_timeout() -> None:
    long_wait = TransientStepError("429", retry_after=500.0)
    fleet = Fleet(_flow(("call", _raising(long_wait))))
    with pytest.raises(RetryLater) as caught:
        fleet.run(fleet.submit(), 0)
    assert caught.value.countdown == POLICY.visibility_timeout / 2


def test_backoff_of_late_attempts_is_bounded_by_half_the_visibility_timeout() -> None:
    policy = RunnerPolicy(lease_seconds=8, max_retries=50, visibility_timeout=4)
    errors = [TransientStepError("down") for _ in range(20)]
    fleet = Fleet(_flow(("call", _raising(*errors))), policy=policy)
    context = fleet.submit()
    for attempts in range(10, 30):
        with pytest.raises(RetryLater) as caught:
            fleet.run(context, 0, attempts=attempts)
        assert caught.value.countdown <= 2.0


def test_last_attempt_records_the_failure_and_how_many_attempts_were_made() -> None:
    fleet = Fleet(_flow(("ok", lambda ctx: 1), ("call", _raising(TransientStepError("503")))))
    context = fleet.run(fleet.submit(), 0)
    with pytest.raises(StepFailed, match="gave up after 4 attempts"):
        fleet.run(context, 1, attempts=POLICY.max_retries)
    ended = fleet.store.get(context["invocation_id"])
    assert ended is not None and ended.status is InvocationStatus.FAILED
    assert ended.error == "step call: 503 (gave up after 4 attempts)"
    assert [(s.name, s.status, s.attempts) for s in ended.steps] == [
        ("ok", StepStatus.DONE, 1), ("call", StepStatus.FAILED, 4)]


def test_permanent_error_fails_the_invocation_at_once_naming_the_step() -> None:
    fleet = Fleet(_flow(("load", lambda ctx: 1), ("parse", lambda ctx: int("x")),
                        ("never", lambda ctx: 2)))
    context = fleet.run(fleet.submit(), 0)
    with pytest.raises(StepFailed) as caught:
        fleet.run(context, 1)  # first attempt: no retry for a bug
    assert "step parse: ValueError: invalid literal" in str(caught.value)
    ended = fleet.store.get(context["invocation_id"])
    assert ended is not None and ended.status is InvocationStatus.FAILED
    assert ended.error == str(caught.value)
    assert [s.name for s in ended.steps] == ["load", "parse"]


def test_output_that_is_not_plain_json_fails_the_step() -> None:
    fleet = Fleet(_flow(("odd", lambda ctx: {"when": {1, 2}})))
    context = fleet.submit()
    with pytest.raises(StepFailed, match="step odd returned output that is not plain JSON"):
        fleet.run(context, 0)
    assert fleet.store.status(context["invocation_id"]) is InvocationStatus.FAILED


def test_unknown_workflow_fails_the_invocation_with_the_reason() -> None:
    fleet = Fleet(_flow(("a", lambda ctx: 1)))
    context = {**fleet.submit(), "workflow": "not-deployed-here"}
    with pytest.raises(StepFailed, match="no workflow named 'not-deployed-here'"):
        fleet.run(context, 0)
    ended = fleet.store.get(context["invocation_id"])
    assert ended is not None and ended.status is InvocationStatus.FAILED
    assert ended.error is not None and "not-deployed-here" in ended.error


def test_step_whose_deliveries_keep_dying_fails_instead_of_running_for_ever() -> None:
    step, calls = _counted()
    fleet = Fleet(_flow(("crashy", step)))
    context = fleet.submit()
    invocation_id = context["invocation_id"]
    for n in range(POLICY.max_deliveries):  # each delivery dies holding the claim
        fleet.claims.begin(invocation_id, 0, f"w-dead-{n}", 8)
        fleet.clock.advance(9)
    with pytest.raises(StepFailed, match=f"died {POLICY.max_deliveries} times"):
        fleet.run(context, 0)
    assert calls == []
    assert fleet.store.status(invocation_id) is InvocationStatus.FAILED


def test_provider_outage_holds_the_step_without_spending_attempts() -> None:
    fleet = Fleet(_flow(("ask", _raising(ProviderOutage("all providers down", 5.0)))))
    with pytest.raises(RetryLater) as caught:
        fleet.run(fleet.submit(), 0, attempts=2)
    assert caught.value.attempts == 2
    assert caught.value.held_since_ms == int(fleet.clock() * 1000)
    assert caught.value.countdown == 5.0


def test_provider_outage_past_the_hold_fails_the_step() -> None:
    fleet = Fleet(_flow(("ask", _raising(ProviderOutage("all providers down")))))
    context = fleet.submit()
    held_since = int(fleet.clock() * 1000) - int((POLICY.outage_hold + 1) * 1000)
    with pytest.raises(StepFailed, match="ORCH_LLM_OUTAGE_HOLD"):
        fleet.run(context, 0, held_since_ms=held_since)
    assert fleet.store.status(context["invocation_id"]) is InvocationStatus.FAILED


def test_last_step_writes_the_end_with_every_step_record_and_the_tokens() -> None:
    flow = _flow(("load", lambda ctx: {"customer": "c-1"}))
    flow.llm("answer", messages=lambda ctx: [{"role": "user", "content": "hi"}])
    flow.python("wrap", lambda ctx: {"reply": ctx.outputs["answer"]["content"]})
    fleet = Fleet(flow, executor=StepExecutor(llm=CannedLLM("hello", 12, 5), tools=NoTools()))
    context = fleet.submit()
    invocation_id = context["invocation_id"]
    context = fleet.run(context, 0)
    assert fleet.store.status(invocation_id) is InvocationStatus.QUEUED  # no end yet
    fleet.clock.advance(1.5)
    fleet.run_all(context)
    ended = fleet.store.get(invocation_id)
    assert ended is not None and ended.status is InvocationStatus.SUCCEEDED
    assert ended.output == {"reply": "hello"}
    assert [(s.index, s.name, s.kind, s.status) for s in ended.steps] == [
        (0, "load", "python", StepStatus.DONE), (1, "answer", "llm", StepStatus.DONE),
        (2, "wrap", "python", StepStatus.DONE)]
    assert ended.steps[1].tokens.prompt == 12 and ended.steps[1].tokens.completion == 5
    assert (ended.tokens.prompt, ended.tokens.completion) == (12, 5)
    assert ended.started_at == ended.steps[0].started_at


def test_end_stays_as_first_written_when_the_last_step_is_redelivered() -> None:
    step, calls = _counted()
    fleet = Fleet(_flow(("only", step)))
    context = fleet.submit()
    fleet.run(context, 0)
    first = fleet.store.get(context["invocation_id"])
    fleet.clock.advance(60)
    fleet.run(context, 0)
    assert fleet.store.get(context["invocation_id"]) == first
    assert len(calls) == 1


class FlakyStore(MemoryInvocationStore):
    """An invocation store whose ``complete`` meets ``outages`` connection errors first."""

    def __init__(self, clock: ManualClock, outages: int) -> None:
        super().__init__(clock)
        self.outages = outages

    def complete(self, invocation_id: str, **kwargs: Any) -> bool:
        if self.outages:
            self.outages -= 1
            raise ConnectionError("PostgreSQL is restarting")
        return super().complete(invocation_id, **kwargs)


def test_end_lost_to_an_outage_is_written_by_the_next_delivery() -> None:
    step, calls = _counted()
    fleet = Fleet(_flow(("only", step)))
    fleet.store = FlakyStore(fleet.clock, outages=1)
    fleet.runner.store = fleet.store
    context = fleet.submit()
    with pytest.raises(RetryLater, match="recording its result failed"):
        fleet.run(context, 0)
    assert fleet.store.status(context["invocation_id"]) is InvocationStatus.QUEUED
    fleet.run(context, 0)  # the retry: the step is done in Redis, the end gets written
    assert fleet.store.status(context["invocation_id"]) is InvocationStatus.SUCCEEDED
    assert len(calls) == 1


class Counters(redis.Redis):
    """Telemetry that counts in memory: no Redis is reached."""

    def __init__(self) -> None:
        super().__init__()
        self.counted: dict[str, int] = {}

    def hincrby(self, name: str, key: str, amount: int = 1) -> int:  # type: ignore[override]
        self.counted[key] = self.counted.get(key, 0) + amount
        return self.counted[key]


@pytest.fixture
def tool_fleet(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Fleet, list[str]]]:
    """A one-tool-step workflow on the real tool invoker; its tool fails every call."""
    calls: list[str] = []

    def lookup(payload: dict[str, Any]) -> Any:
        calls.append(payload["order"])
        raise ConnectionError("orders service unreachable")

    registry = ToolRegistry()
    registry.declare("lookup", fn=lookup, timeout=1.0,
                     fallback=lambda p: {"order": p["order"], "degraded": True})
    monkeypatch.setattr(invoke, "tools", registry)
    flow = Workflow(f"unit-{next(_ids)}", payload=Ticket, register=False)
    flow.tool("lookup", tool="lookup", input=lambda ctx: {"order": "A-1"})
    pools = ToolPools()
    with httpx.Client() as http:
        tools = ToolInvoker(breakers=Breakers(MemoryBreakerStore(), lambda: "w1"), http=http,
                            endpoint="http://127.0.0.1:9", pools=pools,
                            telemetry=Counters())
        yield Fleet(flow, executor=StepExecutor(llm=CannedLLM(), tools=tools)), calls
    pools.shutdown()


def test_failing_tool_is_retried_before_its_last_attempt(
    tool_fleet: tuple[Fleet, list[str]],
) -> None:
    fleet, calls = tool_fleet
    with pytest.raises(RetryLater, match="orders service unreachable"):
        fleet.run(fleet.submit(), 0, attempts=POLICY.max_retries - 1)
    assert calls == ["A-1"]


def test_tool_fallback_answers_on_the_last_attempt(
    tool_fleet: tuple[Fleet, list[str]],
) -> None:
    fleet, calls = tool_fleet
    context = fleet.run(fleet.submit(), 0, attempts=POLICY.max_retries)
    assert context["outputs"] == {"lookup": {"order": "A-1", "degraded": True}}
    ended = fleet.store.get(context["invocation_id"])
    assert ended is not None and ended.status is InvocationStatus.SUCCEEDED
    assert ended.steps[0].fallback and ended.steps[0].attempts == POLICY.max_retries + 1
    assert calls == ["A-1"]


def test_python_step_past_its_soft_time_limit_fails_naming_the_limit() -> None:
    import time as _time

    def slow(ctx: StepContext) -> dict[str, bool]:
        _time.sleep(2)
        return {"never": True}

    fleet = Fleet(_flow(("slow", slow)),
                  policy=RunnerPolicy(lease_seconds=8, max_retries=3, visibility_timeout=20,
                                      record_retry_seconds=0.0, step_time_limit=0.2))
    context = fleet.submit()
    started = _time.monotonic()
    with pytest.raises(StepFailed, match="ran past its time limit"):
        fleet.run(context, 0)
    assert _time.monotonic() - started < 1.5
    stored = fleet.store.get(context["invocation_id"])
    assert stored is not None and stored.status is InvocationStatus.FAILED
    assert stored.error == "step slow ran past its time limit of 0s (ORCH_STEP_TIME_LIMIT)"


def test_step_stuck_past_its_hard_limit_gets_its_process_killed() -> None:
    killed: list[bool] = []
    fleet = Fleet(_flow(("one", lambda ctx: {"ok": True})))
    heartbeat = fleet.runner.heartbeat
    heartbeat.kill = lambda: killed.append(True)  # type: ignore[method-assign]
    heartbeat.hold(("inv-x", 0, "w1"), deadline=0.0)
    heartbeat.beat(renew=False)
    assert killed == [True]
    heartbeat.drop(("inv-x", 0, "w1"))
    killed.clear()
    heartbeat.beat(renew=False)
    assert killed == []



def test_cancelled_invocation_stops_at_its_next_step_without_recording() -> None:
    fleet = Fleet(_flow(("one", lambda ctx: {"n": 1}), ("two", lambda ctx: {"n": 2})))
    context = fleet.run(fleet.submit(), 0)
    fleet.claims.cancel(context["invocation_id"], "operator said so")
    with pytest.raises(InvocationCancelled, match="operator said so"):
        fleet.run(context, 1)
    _, records, _ = fleet.claims.snapshot(context["invocation_id"])
    assert set(records) == {0}


def test_step_sees_its_invocation_cancelled_while_it_runs() -> None:
    seen: list[bool] = []
    holder: dict[str, Fleet] = {}

    def watchful(ctx: StepContext) -> dict[str, bool]:
        holder["fleet"].claims.cancel(ctx.invocation_id, "mid-step")
        seen.append(ctx.cancelled())
        raise InvocationCancelled("stopped early")

    fleet = Fleet(_flow(("watch", watchful)))
    holder["fleet"] = fleet
    context = fleet.submit()
    with pytest.raises(InvocationCancelled):
        fleet.run(context, 0)
    assert seen == [True]
    assert fleet.claims.snapshot(context["invocation_id"])[1] == {}
