"""Every error the orchestrator raises, under one root: :class:`OrchestratorError`."""

from __future__ import annotations


class OrchestratorError(Exception):
    """Root of all orchestrator errors."""


class ConfigError(OrchestratorError):
    """A setting is missing or invalid; the message names the ``ORCH_*`` variable."""


class UnknownWorkflow(OrchestratorError):
    """No workflow is registered under the given name."""


class WorkflowDefinitionError(OrchestratorError):
    """A workflow or step was declared wrongly (duplicate name, bad step, ...)."""


class InvalidPayload(OrchestratorError):
    """The payload does not match the workflow's model, or is not plain JSON."""


class PayloadTooLarge(InvalidPayload):
    """The payload's JSON encoding is over the configured byte limit."""


class Backpressure(OrchestratorError):
    """The system refuses new work for now; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(f"{message} (retry after {retry_after:.1f}s)")
        self.retry_after = retry_after


class VersionConflict(OrchestratorError):
    """A compare-and-set lost: the record changed since it was read."""


class UnknownInvocation(OrchestratorError):
    """No invocation has the given id."""


class InvalidState(OrchestratorError):
    """The invocation is not in a state that allows this (e.g. replaying a running one)."""


class InvocationCancelled(OrchestratorError):
    """The invocation was cancelled: its steps stop at their next delivery."""


class UnknownQueue(OrchestratorError):
    """No queue of the fleet has the given name."""


class InvocationTimeout(OrchestratorError):
    """``wait`` gave up before the invocation finished."""


class UnknownTool(OrchestratorError):
    """No tool is registered under the given name."""


class ToolDefinitionError(OrchestratorError):
    """A tool was declared without a timeout or fallback, or with bad values."""


class StepFailed(OrchestratorError):
    """A step raised an error that retrying will not fix."""


class InvalidOutput(StepFailed):
    """A step returned something that is not plain JSON (or that PostgreSQL cannot store)."""


class TransientStepError(OrchestratorError):
    """A step failed in a way worth retrying (a timeout, a 5xx, a dropped connection).

    ``retry_after`` is the suggested delay in seconds, when the cause gives one.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderOutage(TransientStepError):
    """No LLM provider can answer now (5xx, timeouts, breakers open): an LLM step holds,
    without spending its retries, for up to ``ORCH_LLM_OUTAGE_HOLD`` seconds."""


class StepBusy(OrchestratorError):
    """Another delivery of this step holds its claim; try again after ``retry_after``."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceError(OrchestratorError):
    """An embedded or configured service (Redis, PostgreSQL, simulator) is unusable."""


class ServiceUnavailable(ServiceError):
    """Redis or PostgreSQL did not answer (connection refused, timed out): an outage.

    ``variable`` names the setting (``ORCH_REDIS_URL``, ``ORCH_DATABASE_URL``,
    ``ORCH_STATE_REDIS_URLS``), ``address`` is its URL with the password masked.
    """

    def __init__(self, message: str, *, variable: str, address: str) -> None:
        super().__init__(message)
        self.variable = variable
        self.address = address


class ServiceMisconfigured(ConfigError):
    """Redis or PostgreSQL answered but refused us for a reason in the configuration
    (credentials refused, unknown host, no such database, no tables yet).

    ``variable`` and ``address`` as for :class:`ServiceUnavailable`.
    """

    def __init__(self, message: str, *, variable: str, address: str) -> None:
        super().__init__(message)
        self.variable = variable
        self.address = address


class RetryLater(OrchestratorError):
    """Control flow from the step runner to the task adapter: deliver this step again
    after ``countdown`` seconds, with ``attempts`` failed attempts counted so far and, in a
    provider outage, ``held_since_ms`` (Redis time) when the step began to hold."""

    def __init__(self, message: str, countdown: float, *, attempts: int = 0,
                 held_since_ms: int | None = None) -> None:
        super().__init__(message)
        self.countdown = countdown
        self.attempts = attempts
        self.held_since_ms = held_since_ms
