"""The three step tasks, one per queue. Each is a name, a queue and a call to ``deliver``.

``max_retries=None`` on the decorator makes Celery's own retries unlimited: the step
runner counts attempts and decides when a step has failed (see ``tasks/adapter.py``).
Time limits are the runner's too (``orchestrator/execution/time_limit.py``), not
Celery's, whose per-task timers cost about a tenth of the throughput on short steps.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from config.celery import AGENTS_QUEUE, LLM_QUEUE, STEP_TASKS, TOOLS_QUEUE
from orchestrator.errors import InvocationCancelled, StepFailed
from tasks.adapter import deliver
from workers.app import app

# Exceptions that end a chain on purpose: logged briefly by Celery, not as errors.
ENDS = (StepFailed, InvocationCancelled)

# A step returns the whole context; its success event (Flower) needs only the start of it.
RESULT_REPR_CHARS = 200


@app.task(name=STEP_TASKS[AGENTS_QUEUE], bind=True, throws=ENDS, max_retries=None,
          resultrepr_maxsize=RESULT_REPR_CHARS)
def python_step(self: Task, context: dict[str, Any], index: int,
                **delivery: Any) -> dict[str, Any]:
    return deliver(self, context, index, delivery)


@app.task(name=STEP_TASKS[LLM_QUEUE], bind=True, throws=ENDS, max_retries=None,
          resultrepr_maxsize=RESULT_REPR_CHARS)
def llm_step(self: Task, context: dict[str, Any], index: int,
             **delivery: Any) -> dict[str, Any]:
    return deliver(self, context, index, delivery)


@app.task(name=STEP_TASKS[TOOLS_QUEUE], bind=True, throws=ENDS, max_retries=None,
          resultrepr_maxsize=RESULT_REPR_CHARS)
def tool_step(self: Task, context: dict[str, Any], index: int,
              **delivery: Any) -> dict[str, Any]:
    return deliver(self, context, index, delivery)
