"""The three step tasks, one per queue. Each is a name, a queue and a call to ``deliver``.

``max_retries=None`` on the decorator makes Celery's own retries unlimited: the step
runner counts attempts and decides when a step has failed (see ``tasks/adapter.py``).
Python steps run under a soft time limit (``ORCH_STEP_TIME_LIMIT``; the step fails when
it passes) and a hard one 30 s later (the pool process is killed; its deliveries count
towards ``ORCH_STEP_MAX_DELIVERIES``). LLM and tool steps run on thread pools, where
Celery has no time limits: their own timeouts bound them (``ORCH_LLM_TIMEOUT``,
``ORCH_LLM_MAX_WAIT``, each tool's declared timeout).
"""

from __future__ import annotations

from typing import Any

from celery import Task

from config.celery import AGENTS_QUEUE, LLM_QUEUE, STEP_TASKS, TOOLS_QUEUE
from orchestrator import runtime
from orchestrator.errors import StepFailed
from tasks.adapter import deliver
from workers.app import app

# A step returns the whole context; its success event (Flower) needs only the start of it.
RESULT_REPR_CHARS = 200
TIME_LIMIT = runtime.current().settings.step_time_limit


@app.task(name=STEP_TASKS[AGENTS_QUEUE], bind=True, throws=(StepFailed,), max_retries=None,
          resultrepr_maxsize=RESULT_REPR_CHARS, soft_time_limit=TIME_LIMIT,
          time_limit=TIME_LIMIT + 30)
def python_step(self: Task, context: dict[str, Any], index: int,
                **delivery: Any) -> dict[str, Any]:
    return deliver(self, context, index, delivery)


@app.task(name=STEP_TASKS[LLM_QUEUE], bind=True, throws=(StepFailed,), max_retries=None,
          resultrepr_maxsize=RESULT_REPR_CHARS)
def llm_step(self: Task, context: dict[str, Any], index: int,
             **delivery: Any) -> dict[str, Any]:
    return deliver(self, context, index, delivery)


@app.task(name=STEP_TASKS[TOOLS_QUEUE], bind=True, throws=(StepFailed,), max_retries=None,
          resultrepr_maxsize=RESULT_REPR_CHARS)
def tool_step(self: Task, context: dict[str, Any], index: int,
              **delivery: Any) -> dict[str, Any]:
    return deliver(self, context, index, delivery)
