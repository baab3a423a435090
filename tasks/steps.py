"""The three step tasks, one per queue. Each is a name, a queue and a call to ``deliver``.

``max_retries=None`` on the decorator makes Celery's own retries unlimited: the step
runner counts attempts and decides when a step has failed (see ``tasks/adapter.py``).
Time limits are the runner's too (``orchestrator/execution/time_limit.py``), not
Celery's, whose per-task timers cost about a tenth of the throughput on short steps.
Each returns a ``StepResult`` (``tasks/result.py``): the next step gets the context, Celery's
success event and log line get a summary.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from config.celery import AGENTS_QUEUE, LLM_QUEUE, STEP_TASKS, TOOLS_QUEUE
from orchestrator.errors import InvocationCancelled, StepFailed
from tasks.adapter import deliver
from tasks.result import SUMMARY_CHARS, StepResult
from workers.app import app

# Exceptions that end a chain on purpose: logged briefly by Celery, not as errors.
ENDS = (StepFailed, InvocationCancelled)


@app.task(name=STEP_TASKS[AGENTS_QUEUE], bind=True, throws=ENDS, max_retries=None,
          resultrepr_maxsize=SUMMARY_CHARS)
def python_step(self: Task, context: dict[str, Any], index: int,
                **delivery: Any) -> StepResult:
    return deliver(self, context, index, delivery)


@app.task(name=STEP_TASKS[LLM_QUEUE], bind=True, throws=ENDS, max_retries=None,
          resultrepr_maxsize=SUMMARY_CHARS)
def llm_step(self: Task, context: dict[str, Any], index: int,
             **delivery: Any) -> StepResult:
    return deliver(self, context, index, delivery)


@app.task(name=STEP_TASKS[TOOLS_QUEUE], bind=True, throws=ENDS, max_retries=None,
          resultrepr_maxsize=SUMMARY_CHARS)
def tool_step(self: Task, context: dict[str, Any], index: int,
              **delivery: Any) -> StepResult:
    return deliver(self, context, index, delivery)
