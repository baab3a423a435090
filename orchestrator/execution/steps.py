"""Executing one step by its kind: python code, an LLM call, or a tool call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator.errors import StepFailed
from orchestrator.llm.gateway import Completion
from orchestrator.tools.invoke import ToolOutcome
from orchestrator.workflow import LLMStep, PythonStep, Step, StepContext, ToolStep


@dataclass(frozen=True)
class StepOutcome:
    output: Any
    prompt_tokens: int = 0
    completion_tokens: int = 0
    fallback: bool = False


class LLM(Protocol):
    def complete(self, messages: list[dict[str, str]], *, max_tokens: int,
                 temperature: float = 0.0,
                 should_stop: Callable[[], bool] | None = None) -> Completion: ...


class Tools(Protocol):
    def invoke(self, name: str, payload: dict[str, Any], *,
               last_attempt: bool) -> ToolOutcome: ...


class Executor(Protocol):
    def execute(self, step: Step, ctx: StepContext, *, last_attempt: bool) -> StepOutcome: ...


class StepExecutor:
    """Runs a step's own work with this process's LLM gateway and tool invoker."""

    def __init__(self, *, llm: LLM, tools: Tools) -> None:
        self.llm = llm
        self.tools = tools

    def execute(self, step: Step, ctx: StepContext, *, last_attempt: bool) -> StepOutcome:
        """The step's outcome; raises what the step raises (``TransientStepError`` for
        what a retry may cure)."""
        if isinstance(step, PythonStep):
            return StepOutcome(step.fn(ctx))
        if isinstance(step, LLMStep):
            # A cancel reaches a call still waiting for capacity in the limiter.
            done = self.llm.complete(step.messages(ctx), max_tokens=step.max_tokens,
                                     temperature=step.temperature, should_stop=ctx.cancelled)
            result = done.result
            return StepOutcome(
                {"content": result.content, "model": result.model, "provider": done.provider,
                 "limiter_wait_s": round(done.waited, 4), "attempts": done.attempts,
                 "usage": {"prompt_tokens": result.prompt_tokens,
                           "completion_tokens": result.completion_tokens}},
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
            )
        if isinstance(step, ToolStep):
            outcome = self.tools.invoke(step.tool, step.input(ctx), last_attempt=last_attempt)
            return StepOutcome(outcome.output, fallback=outcome.fallback)
        raise StepFailed(f"unknown step type {type(step).__name__}")
