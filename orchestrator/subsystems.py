"""The composition root: the subsystems of one process, built from its connections.

:mod:`orchestrator.runtime` holds the connections (engine, Redis clients, HTTP client,
producer, shards); this module builds the objects that use them (invocation store, step
claims, breakers, LLM gateway, tool invoker, state, admission, the step runner), each
once per process and lazily, and hands them to each other. Subsystems never look
each other up: only the edges (the producer API, the Celery task adapter, the state API,
the CLI) call :func:`current`.
"""

from __future__ import annotations

import threading
from functools import cached_property

from config import Settings
from orchestrator import runtime
from orchestrator.breakers import Breakers, RedisBreakerStore
from orchestrator.execution.admission import Admission
from orchestrator.execution.claims import RedisStepClaims
from orchestrator.execution.identity import ProcessIdentity
from orchestrator.execution.reconciler import Reconciler
from orchestrator.execution.runner import RunnerPolicy, StepRunner
from orchestrator.execution.steps import StepExecutor
from orchestrator.llm.gateway import Gateway
from orchestrator.state.api import StateAPI
from orchestrator.state.durable import DurableState
from orchestrator.state.router import StateRouter
from orchestrator.state.writeback import WriteBackState
from orchestrator.store.invocations import InvocationStore
from orchestrator.store.state_rows import StateRows
from orchestrator.tools.invoke import ToolInvoker
from orchestrator.tools.pools import ToolPools
from orchestrator.workflow import registry


class Subsystems:
    """Everything one process builds from its :class:`runtime.Runtime`."""

    def __init__(self, rt: runtime.Runtime) -> None:
        self.runtime = rt
        self.generation = rt.generation
        self.identity = ProcessIdentity()

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    def load_workflows(self) -> None:
        """Import ``ORCH_WORKFLOW_MODULES`` once, so the workflow registry is filled."""
        registry.load(self.settings.workflow_modules)

    @cached_property
    def store(self) -> InvocationStore:
        return InvocationStore(self.runtime.engine)

    @cached_property
    def state_rows(self) -> StateRows:
        return StateRows(self.runtime.engine)

    @cached_property
    def claims(self) -> RedisStepClaims:
        return RedisStepClaims(self.runtime.redis,
                               visibility_timeout=self.settings.visibility_timeout)

    @cached_property
    def admission(self) -> Admission:
        return Admission(self.runtime.redis, self.settings)

    @cached_property
    def breakers(self) -> Breakers:
        return Breakers(RedisBreakerStore(self.runtime.redis), self.identity.owner,
                        enabled=self.settings.breakers_enabled)

    @cached_property
    def llm(self) -> Gateway:
        """The LLM gateway of this process (its limiters are shared fleet-wide)."""
        rt = self.runtime
        return Gateway(self.settings, rt.redis, rt.http, self.breakers)

    @cached_property
    def tool_threads(self) -> ToolPools:
        """The threads that run tool calls under their timeouts: a bounded pool per tool."""
        return ToolPools()

    @cached_property
    def tools(self) -> ToolInvoker:
        rt = self.runtime
        return ToolInvoker(breakers=self.breakers, http=rt.http,
                           endpoint=self.settings.tools_endpoint, pools=self.tool_threads,
                           telemetry=rt.redis)

    @cached_property
    def state(self) -> StateAPI:
        durable = DurableState(self.state_rows)
        writeback = None
        if self.settings.state_write_back_prefixes:
            writeback = WriteBackState(self.runtime.state_shards, durable,
                                       dirty_limit=self.settings.state_dirty_limit)
        router = StateRouter(durable, writeback, self.settings.state_write_back_prefixes)
        return StateAPI(router, telemetry=self.runtime.redis)

    @cached_property
    def runner(self) -> StepRunner:
        """The step runner of this worker process."""
        self.load_workflows()
        return StepRunner(claims=self.claims, store=self.store,
                          executor=StepExecutor(llm=self.llm, tools=self.tools),
                          identity=self.identity, workflows=registry,
                          policy=RunnerPolicy.from_settings(self.settings))

    def reconciler(self) -> Reconciler:
        """A reconciler for this process (``orchestrator reconciler``)."""
        self.load_workflows()
        rt = self.runtime
        return Reconciler(store=self.store, claims=self.claims, client=rt.redis,
                          producer=rt.producer, workflows=registry,
                          stall_seconds=self.settings.stall_seconds,
                          max_redispatches=self.settings.reconcile_max_redispatches,
                          owner=self.identity.owner(),
                          retention_days=self.settings.retention_days)

    def close(self) -> None:
        """Stop this process's tool threads and close its connections."""
        if "tool_threads" in self.__dict__:
            self.tool_threads.shutdown()
        self.runtime.close()


_current: Subsystems | None = None
_lock = threading.Lock()


def current() -> Subsystems:
    """The subsystems of this process's current runtime, rebuilt once its connections
    were dropped (``configure``, ``close``, a fork)."""
    global _current
    rt = runtime.current()
    found = _current
    if found is not None and found.runtime is rt and found.generation == rt.generation:
        return found
    with _lock:
        if (_current is None or _current.runtime is not rt
                or _current.generation != rt.generation):
            _current = Subsystems(rt)
        return _current
