"""Log lines of the fleet: every line logged during a step names its invocation, workflow,
step and queue, in text or as one JSON object a line (``ORCH_LOG_FORMAT``).

The step's names live in a context variable set around each delivery
(:func:`step_context`, by the task adapter), so any module's ``logging.getLogger(...)``
lines carry them without being handed anything; a worker's threads (the ``threads``
pool) each have their own context. :func:`configure` installs the formatter on the root
logger; workers (Celery's ``setup_logging`` signal) and the long-running commands
(``flusher``, ``reconciler``, ``metrics``) call it.

A line never holds a payload or a step's output: the formatters write the message and
the fields below, nothing a record carries besides, and Celery's "Task ... succeeded"
line (which repr's the returned context, payload included) loses its return value.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("text", "json")
# What a step's lines carry, as record attributes (None outside a step).
STEP_FIELDS = ("invocation_id", "workflow", "step", "queue", "task_id")
# Celery's logger of task outcomes; its success line repr's the step's return value.
CELERY_TRACE_LOGGER = "celery.app.trace"
NOT_LOGGED = "(context not logged)"


@dataclass(frozen=True)
class StepLogContext:
    invocation_id: str | None
    workflow: str | None
    step: str | None
    queue: str | None
    task_id: str | None = None


_current: ContextVar[StepLogContext | None] = ContextVar("orchestrator_step", default=None)


@contextmanager
def step_context(*, invocation_id: str | None, workflow: str | None, step: str | None,
                 queue: str | None, task_id: str | None = None) -> Iterator[None]:
    """Within the block, every log line of this thread names this step."""
    token = _current.set(StepLogContext(invocation_id, workflow, step, queue, task_id))
    try:
        yield
    finally:
        _current.reset(token)


def current_step() -> StepLogContext | None:
    """The step whose delivery this thread is running, if any."""
    return _current.get()


_base_factory = logging.getLogRecordFactory()


def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    found = _current.get()
    for name in STEP_FIELDS:
        setattr(record, name, getattr(found, name) if found else None)
    return record


def install_record_factory() -> None:
    """Give every log record of this process the step fields (idempotent)."""
    if logging.getLogRecordFactory() is not _record_factory:
        logging.setLogRecordFactory(_record_factory)


def _step_fields(record: logging.LogRecord) -> dict[str, str]:
    return {name: value for name in STEP_FIELDS
            if (value := getattr(record, name, None)) is not None}


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [invocation=... workflow=... step=... queue=...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _step_fields(record)
        if not fields:
            return line
        tail = " ".join(f"{name.removesuffix('_id') if name == 'invocation_id' else name}="
                        f"{value}" for name, value in fields.items())
        head, newline, rest = line.partition("\n")  # a traceback follows the first line
        return f"{head} [{tail}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``process``, ``thread``, the step fields when in a step, ``exc_info`` (the traceback,
    as one string) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
            **_step_fields(record),
        }
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class _DropReturnValue(logging.Filter):
    """Celery's success line without the returned context (it holds the payload)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, Mapping) and "return_value" in record.args:
            record.args = {**record.args, "return_value": NOT_LOGGED}
            if isinstance(getattr(record, "data", None), Mapping):
                record.data = record.args
        return True


class _OurHandler(logging.StreamHandler[TextIO]):
    """Marks the handler :func:`configure` installed, so a second call replaces it."""


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of ``fmt`` (``text`` or ``json``); raises ``ValueError`` otherwise."""
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def configure(fmt: str = "text", *, level: int | str = logging.INFO,
              stream: TextIO | None = None) -> None:
    """Log this process's lines to ``stream`` (stderr) in ``fmt``, at ``level`` and above,
    with the step fields; replaces what an earlier call installed, leaves other handlers."""
    install_record_factory()
    handler = _OurHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings become lines of this format too
    trace = logging.getLogger(CELERY_TRACE_LOGGER)
    if not any(isinstance(f, _DropReturnValue) for f in trace.filters):
        trace.addFilter(_DropReturnValue())



def enter_step(context: StepLogContext) -> None:
    """From now on, this thread's lines name ``context`` (until :func:`leave_step`): for
    a start and an end that are two calls, such as Celery's prerun and postrun signals."""
    _current.set(context)


def leave_step() -> None:
    """This thread's lines name no step any more."""
    _current.set(None)
