"""Log lines: a step's lines name it; text or one JSON object a line; no payload."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from config import InvalidSettings, load_settings
from orchestrator import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger writing to a buffer through :func:`logs.configure` (restored after)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    trace_filters = list(logging.getLogger(logs.CELERY_TRACE_LOGGER).filters)
    buffer = io.StringIO()
    try:
        yield buffer
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger(logs.CELERY_TRACE_LOGGER).filters[:] = trace_filters


def _step() -> logs.StepLogContext:
    return logs.StepLogContext("inv-1", "support-triage", "classify", "llm", "task-9")


def _in_step(message: str, *args: object) -> None:
    ctx = _step()
    with logs.step_context(invocation_id=ctx.invocation_id, workflow=ctx.workflow,
                           step=ctx.step, queue=ctx.queue, task_id=ctx.task_id):
        logging.getLogger("orchestrator.execution.runner").warning(message, *args)


def test_a_text_line_of_a_step_names_invocation_workflow_step_and_queue(
        captured: io.StringIO) -> None:
    logs.configure("text", stream=captured)
    _in_step("step %s retried", "classify")
    logging.getLogger("orchestrator").warning("outside any step")
    inside, outside = captured.getvalue().splitlines()
    assert inside.endswith("step classify retried [invocation=inv-1 workflow=support-triage "
                           "step=classify queue=llm task_id=task-9]")
    assert "WARNING orchestrator.execution.runner:" in inside
    assert outside.endswith("orchestrator: outside any step")


def test_a_json_line_is_one_object_with_the_step_fields(captured: io.StringIO) -> None:
    logs.configure("json", stream=captured)
    _in_step("step %s retried", "classify")
    try:
        raise RuntimeError("line one\nline two")
    except RuntimeError:
        logging.getLogger("orchestrator").exception("it broke")
    lines = captured.getvalue().splitlines()
    assert len(lines) == 2  # the traceback stays inside its line
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "step classify retried"
    assert {k: first[k] for k in ("invocation_id", "workflow", "step", "queue", "task_id")} == {
        "invocation_id": "inv-1", "workflow": "support-triage", "step": "classify",
        "queue": "llm", "task_id": "task-9"}
    assert first["level"] == "WARNING" and first["logger"] == "orchestrator.execution.runner"
    assert first["ts"].endswith("+00:00")
    assert "invocation_id" not in second
    assert "RuntimeError: line one\nline two" in second["exc_info"]


def test_configure_again_replaces_its_handler(captured: io.StringIO) -> None:
    logs.configure("text", stream=io.StringIO())
    logs.configure("json", stream=captured)
    logging.getLogger("orchestrator").warning("once")
    assert len(captured.getvalue().splitlines()) == 1
    assert sum(isinstance(h, logs._OurHandler) for h in logging.getLogger().handlers) == 1


def test_celery_success_line_loses_the_returned_context(captured: io.StringIO) -> None:
    logs.configure("json", stream=captured)
    from celery.app.trace import LOG_SUCCESS

    returned = {"invocation_id": "inv-1", "payload": {"message": "my card number is 4242"}}
    logging.getLogger(logs.CELERY_TRACE_LOGGER).info(
        LOG_SUCCESS, {"id": "t1", "name": "orchestrator.step.llm", "runtime": 0.1,
                      "return_value": repr(returned), "args": "", "kwargs": ""})
    line = json.loads(captured.getvalue())
    assert "4242" not in captured.getvalue()
    assert line["message"].endswith(f"succeeded in 0.1s: {logs.NOT_LOGGED}")


def test_each_thread_has_its_own_step(captured: io.StringIO) -> None:
    logs.configure("json", stream=captured)
    inside = threading.Event()
    release = threading.Event()

    def other() -> None:
        with logs.step_context(invocation_id="inv-2", workflow="w", step="s", queue="tools"):
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(5)
    logging.getLogger("orchestrator").warning("main thread")
    release.set()
    thread.join(5)
    assert logs.current_step() is None
    assert "invocation_id" not in json.loads(captured.getvalue())


def test_log_format_setting_is_text_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_LOG_FORMAT", "JSON")
    assert load_settings().log_format == "json"
    monkeypatch.setenv("ORCH_LOG_FORMAT", "xml")
    with pytest.raises(InvalidSettings) as raised:
        load_settings()
    assert raised.value.variable == "ORCH_LOG_FORMAT"
    assert "'text' or 'json'" in raised.value.message
    with pytest.raises(ValueError, match="text, json"):
        logs.formatter("xml")
