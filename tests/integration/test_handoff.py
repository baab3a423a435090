"""The next step's message a step's record carries is the very message Celery would
have published for the chain (``orchestrator/execution/dispatch.py``)."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

import redis
from celery import Celery, chain, signature

from config import Settings, build_celery_config
from config.celery import STEP_TASKS
from orchestrator.execution.dispatch import next_message


def _decoded(raw: str | bytes) -> dict[str, Any]:
    message = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    message["properties"].pop("delivery_tag")  # drawn anew for every publish
    return dict(message)


def test_next_message_is_the_message_celery_publishes_for_the_chain(
    settings: Settings,
) -> None:
    app = Celery("handoff-test", set_as_current=False)
    app.conf.update(build_celery_config(settings))
    steps = [app.signature(STEP_TASKS["agents"], args=(i,), queue="agents",
                           argsrepr=f"step {i + 1}/3") for i in range(3)]
    whole = chain(*steps)
    whole.freeze()  # every step gets its task id, as when the chain is applied
    tasks = whole.tasks
    # What the first step's request holds: the rest of the chain, next step last.
    remaining = [dict(s) for s in reversed(tasks[1:])]
    request = SimpleNamespace(id=tasks[0].id, root_id=tasks[0].id, chain=remaining,
                              delivery_info={})
    context = {"invocation_id": "inv-1", "workflow": "w", "payload": {"n": 1},
               "outputs": {"a": {"n": 2}}}
    handoff = next_message(app, request, context)
    assert handoff is not None and handoff.key == "agents"

    client = redis.Redis.from_url(settings.redis_url or "")
    client.delete("agents")
    signature(remaining[-1], app=app).apply_async(
        (context,), chain=remaining[:-1], parent_id=request.id, root_id=request.root_id,
        priority=None)
    published = client.rpop("agents")
    assert published is not None
    ours, celerys = _decoded(handoff.message), _decoded(published)
    assert ours == celerys
    assert ours["headers"]["id"] == tasks[1].id
    assert ours["body"][0] == [context, 1]
    assert [s["options"]["argsrepr"] for s in ours["body"][2]["chain"]] == ["step 3/3"]
    app.close()


def test_last_step_has_no_next_message(settings: Settings) -> None:
    app = Celery("handoff-test", set_as_current=False)
    app.conf.update(build_celery_config(settings))
    request = SimpleNamespace(id="t-1", root_id="t-1", chain=None, delivery_info={})
    assert next_message(app, request, {"outputs": {}}) is None
    app.close()
