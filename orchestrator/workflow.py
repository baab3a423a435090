"""Workflows: named, ordered steps of three kinds, declared in producer code.

A workflow is declared once, at import time, and registered by name::

    triage = Workflow("support-triage", payload=TriagePayload)

    @triage.step
    def load_customer(ctx: StepContext) -> dict[str, object]: ...

    triage.llm("classify", messages=lambda ctx: [...], max_tokens=16)
    triage.tool("lookup_order", tool="lookup_order", input=lambda ctx: {...})

Producers and workers import the same modules (``ORCH_WORKFLOW_MODULES``), so both
see the same registry. Each step runs as its own Celery task on its kind's queue.
"""

from __future__ import annotations

import enum
import importlib
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from config.celery import AGENTS_QUEUE, LLM_QUEUE, TOOLS_QUEUE
from orchestrator.errors import ConfigError, UnknownWorkflow, WorkflowDefinitionError

JSON = Any
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class StepKind(enum.StrEnum):
    """What a step does, which decides the queue (and worker profile) it runs on."""

    PYTHON = "python"
    LLM = "llm"
    TOOL = "tool"

    @property
    def queue(self) -> str:
        return {StepKind.PYTHON: AGENTS_QUEUE, StepKind.LLM: LLM_QUEUE, StepKind.TOOL: TOOLS_QUEUE}[
            self
        ]


@dataclass(frozen=True)
class StepContext:
    """What a step sees: the validated payload and the outputs of the steps before it."""

    invocation_id: str
    workflow: str
    step: str
    payload: BaseModel
    outputs: Mapping[str, JSON]
    # True once the invocation was cancelled: a long step may check it and stop early.
    cancelled: Callable[[], bool] = field(default=lambda: False, compare=False, repr=False)


@dataclass(frozen=True)
class PythonStep:
    """Runs ``fn(ctx)`` on the ``agents`` queue; returns a JSON value."""

    name: str
    fn: Callable[[StepContext], JSON]
    kind: StepKind = StepKind.PYTHON


@dataclass(frozen=True)
class LLMStep:
    """One chat completion on the ``llm`` queue; ``messages(ctx)`` builds the prompt."""

    name: str
    messages: Callable[[StepContext], list[dict[str, str]]]
    max_tokens: int = 256
    temperature: float = 0.0
    kind: StepKind = StepKind.LLM


@dataclass(frozen=True)
class ToolStep:
    """Calls the registered tool ``tool`` with ``input(ctx)`` on the ``tools`` queue."""

    name: str
    tool: str
    input: Callable[[StepContext], dict[str, JSON]]
    kind: StepKind = StepKind.TOOL


Step = PythonStep | LLMStep | ToolStep


@dataclass
class Workflow:
    """A named workflow: a payload model and ordered steps. Registers itself on creation."""

    name: str
    payload: type[BaseModel]
    steps: list[Step] = field(default_factory=list)
    register: bool = True

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise WorkflowDefinitionError(
                f"workflow name {self.name!r} must be 1-64 of a-z 0-9 _ . - (lowercase)"
            )
        if not (isinstance(self.payload, type) and issubclass(self.payload, BaseModel)):
            raise WorkflowDefinitionError(
                f"workflow {self.name!r}: payload must be a pydantic BaseModel subclass"
            )
        if self.register:
            registry.add(self)

    def _add(self, step: Step) -> None:
        if not NAME_PATTERN.match(step.name):
            raise WorkflowDefinitionError(
                f"workflow {self.name!r}: step name {step.name!r} must be 1-64 of a-z 0-9 _ . -"
            )
        if any(existing.name == step.name for existing in self.steps):
            raise WorkflowDefinitionError(
                f"workflow {self.name!r}: a step named {step.name!r} exists already"
            )
        self.steps.append(step)

    def step(self, fn: Callable[[StepContext], JSON]) -> Callable[[StepContext], JSON]:
        """Decorator: append a python step named after the function."""
        self._add(PythonStep(name=fn.__name__.replace("_", "-"), fn=fn))
        return fn

    def python(self, name: str, fn: Callable[[StepContext], JSON]) -> Workflow:
        """Append a python step; returns the workflow for chaining."""
        self._add(PythonStep(name=name, fn=fn))
        return self

    def llm(
        self,
        name: str,
        *,
        messages: Callable[[StepContext], list[dict[str, str]]],
        max_tokens: int = 256,
        temperature: float = 0.0,
    ) -> Workflow:
        """Append an LLM chat step; returns the workflow for chaining."""
        if max_tokens <= 0:
            raise WorkflowDefinitionError(f"step {name!r}: max_tokens must be positive")
        self._add(LLMStep(name=name, messages=messages, max_tokens=max_tokens,
                          temperature=temperature))
        return self

    def tool(
        self, name: str, *, tool: str, input: Callable[[StepContext], dict[str, JSON]]
    ) -> Workflow:
        """Append a tool-call step; returns the workflow for chaining."""
        self._add(ToolStep(name=name, tool=tool, input=input))
        return self

    def step_at(self, index: int) -> Step:
        """The step at ``index``; raises ``WorkflowDefinitionError`` when out of range."""
        if not 0 <= index < len(self.steps):
            raise WorkflowDefinitionError(
                f"workflow {self.name!r} has {len(self.steps)} steps, no step {index}"
            )
        return self.steps[index]


class Registry:
    """Workflows by name, for this process."""

    def __init__(self) -> None:
        self._workflows: dict[str, Workflow] = {}
        self._imported: set[str] = set()
        self._lock = threading.Lock()

    def load(self, modules: list[str]) -> None:
        """Import each of ``modules`` once (``ORCH_WORKFLOW_MODULES``), filling the registry.

        Raises ``ConfigError`` naming a module that cannot be imported or raised at import.
        """
        if self._imported.issuperset(modules):
            return
        with self._lock:
            for module in modules:
                if module in self._imported:
                    continue
                try:
                    importlib.import_module(module)
                except ImportError as exc:
                    raise ConfigError(
                        f"ORCH_WORKFLOW_MODULES: cannot import {module!r}: {exc} (is it "
                        "installed, or on PYTHONPATH, where workers and producers run?)"
                    ) from exc
                except Exception as exc:
                    # Whatever a module raises at import, the workflows it declares are
                    # missing: nothing may start as if they were there.
                    first = (str(exc).strip().splitlines() or [""])[0]
                    raise ConfigError(
                        f"ORCH_WORKFLOW_MODULES: importing {module!r} raised "
                        f"{type(exc).__name__}: {first}"
                    ) from exc
                self._imported.add(module)

    def add(self, workflow: Workflow) -> None:
        existing = self._workflows.get(workflow.name)
        if existing is not None and existing is not workflow:
            raise WorkflowDefinitionError(f"a workflow named {workflow.name!r} exists already")
        self._workflows[workflow.name] = workflow

    def get(self, name: str) -> Workflow:
        """The workflow called ``name``; raises ``UnknownWorkflow`` listing the known ones."""
        try:
            return self._workflows[name]
        except KeyError:
            known = ", ".join(sorted(self._workflows)) or "none"
            raise UnknownWorkflow(f"no workflow named {name!r} (registered: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._workflows)

    def remove(self, name: str) -> None:
        self._workflows.pop(name, None)


registry = Registry()
