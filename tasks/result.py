"""What a step task returns: the context for the next step, represented by a summary.

Celery shows a task's return value in two places an operator reads: the ``result`` of
the ``task-succeeded`` event (Flower's task page) and the worker's INFO line
``Task ... succeeded in 0.1s: <result>``. Both are ``saferepr(return value)``
(``celery/app/trace.py``), and ``resultrepr_maxsize`` cannot be set per call. A step's
return value is the whole context (payload and every output so far), so the tasks return
a :class:`StepResult` instead: Celery's ``saferepr`` calls its ``__repr__`` (an object
that is not a dict, list, tuple, set, string or number is repr'd whole), which is a
one-line summary, while kombu's JSON encoder calls its ``__json__``, so the next step of
the chain receives the plain context dict, exactly as before.
"""

from __future__ import annotations

from typing import Any

# Longest summary Celery is allowed to show (resultrepr_maxsize): the label (step, workflow,
# invocation id) plus status, duration and tokens fit well within it.
SUMMARY_CHARS = 300


class StepResult:
    """The context a step passes on (``__json__``), shown as ``summary`` (``__repr__``)."""

    __slots__ = ("context", "summary")

    def __init__(self, context: dict[str, Any], summary: str) -> None:
        self.context = context
        self.summary = summary

    def __json__(self) -> dict[str, Any]:
        return self.context

    def __repr__(self) -> str:
        return self.summary

    __str__ = __repr__


def summarize(label: str, record: dict[str, Any] | None, seconds: float) -> str:
    """``<label>: <status> in <s>s, tokens <n>``: what an operator may see of a delivery.

    ``record`` is the step record this delivery wrote (its ``status`` and token counts
    ``pt``/``ct``), or None when the delivery passed on an output recorded earlier.
    Nothing of the payload or of any output is in it.
    """
    if record is None:
        return f"{label}: already done, passed on in {seconds:.3f}s"
    prompt, completion = int(record.get("pt") or 0), int(record.get("ct") or 0)
    tokens = (f", tokens {prompt + completion} ({prompt} prompt, {completion} completion)"
              if prompt or completion else ", tokens 0")
    fallback = ", fallback" if record.get("fallback") else ""
    return f"{label}: {record.get('status', 'done')} in {seconds:.3f}s{tokens}{fallback}"
