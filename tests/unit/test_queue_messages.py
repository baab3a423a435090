"""Reading step messages as kombu's Redis transport stores them, and the pause plan a
worker follows (no I/O)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from orchestrator.ops.queues import Pause, decode, queue_lists
from workers.pause import plan


def _envelope(args: list[Any], *, task: str = "orchestrator.step.python",
              body_encoding: str | None = "base64",
              content_type: str = "application/json") -> dict[str, Any]:
    # The shape kombu's Redis transport LPUSHes for a Celery (protocol 2) task message.
    body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None,
                                  "chord": None}])
    properties: dict[str, Any] = {
        "correlation_id": "task-1", "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": "agents"}, "priority": 0,
        "delivery_tag": "tag-1"}
    if body_encoding:
        properties["body_encoding"] = body_encoding
        body = base64.b64encode(body.encode()).decode()
    return {"body": body, "content-encoding": "utf-8", "content-type": content_type,
            "headers": {"lang": "py", "task": task, "id": "task-1", "retries": 0,
                        "argsrepr": "step 1/2 'first' of test-probe inv-1"},
            "properties": properties}


CONTEXT = {"invocation_id": "inv-1", "workflow": "test-probe", "payload": {"tag": "t"},
           "outputs": {}}


def test_a_step_message_names_its_invocation_and_step() -> None:
    step = decode(json.dumps(_envelope([CONTEXT, 0])))
    assert step is not None
    assert (step.task_id, step.task, step.invocation_id, step.step) == (
        "task-1", "orchestrator.step.python", "inv-1", 0)


def test_a_later_step_carries_its_predecessors_context() -> None:
    later = {**CONTEXT, "outputs": {"first": {"step": "first"}}}
    step = decode(json.dumps(_envelope([later, 1])).encode())
    assert step is not None and (step.invocation_id, step.step) == ("inv-1", 1)


def test_a_decoded_envelope_and_its_text_read_the_same() -> None:
    envelope = _envelope([CONTEXT, 0])
    assert decode(envelope) == decode(json.dumps(envelope))


def test_a_body_without_base64_encoding_is_read_as_json() -> None:
    step = decode(_envelope([CONTEXT, 0], body_encoding=None))
    assert step is not None and step.invocation_id == "inv-1"


def test_a_message_of_another_task_has_no_invocation() -> None:
    step = decode(_envelope([1, 2], task="other.add"))
    assert step is not None and step.task == "other.add" and step.invocation_id is None


def test_a_message_in_another_serializer_has_no_invocation() -> None:
    step = decode(_envelope([CONTEXT, 0], content_type="application/x-python-serialize"))
    assert step is not None and step.task_id == "task-1" and step.invocation_id is None


def test_what_is_no_envelope_decodes_to_none() -> None:
    assert decode(b"\xff\xfe not json") is None
    assert decode("[1, 2, 3]") is None


def test_a_corrupt_body_has_no_invocation() -> None:
    envelope = _envelope([CONTEXT, 0])
    envelope["body"] = "***not base64***"
    step = decode(envelope)
    assert step is not None and step.invocation_id is None


def test_a_queue_is_its_list_then_its_priority_lists() -> None:
    assert queue_lists("agents") == ["agents", "agents\x06\x163", "agents\x06\x166",
                                     "agents\x06\x169"]


def test_a_pause_reads_who_when_and_why() -> None:
    pause = Pause.load("tools", json.dumps({"by": "ann@ops-1", "at": 0, "reason": "502s"}))
    assert pause == Pause("tools", "ann@ops-1", datetime(1970, 1, 1, tzinfo=UTC), "502s")
    assert pause.as_json()["reason"] == "502s"


def test_a_pause_written_by_hand_still_pauses() -> None:
    pause = Pause.load("tools", b"yes")
    assert pause.queue == "tools" and pause.by == "unknown"


def test_a_worker_stops_only_the_paused_queues_it_consumes() -> None:
    assert plan({"agents"}, {"agents"}, {"agents", "tools"}) == ({"agents"}, set())
    assert plan({"llm"}, {"llm"}, {"agents"}) == (set(), set())


def test_a_resumed_queue_is_taken_again_only_by_workers_started_for_it() -> None:
    assert plan({"agents"}, set(), set()) == (set(), {"agents"})
    # The llm worker never starts consuming tools, paused or not.
    assert plan({"llm"}, {"llm"}, set()) == (set(), set())
    assert plan({"agents", "tools"}, {"agents"}, {"agents"}) == ({"agents"}, {"tools"})
