"""The tool registry: a tool is a name, a callable or an HTTP endpoint, a timeout, a
fallback and a bounded number of threads. A tool without a fallback is refused at
declaration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.breakers import BreakerPolicy
from orchestrator.errors import ToolDefinitionError, UnknownTool
from orchestrator.workflow import NAME_PATTERN

JSON = Any
_NO_FALLBACK = object()
# Threads per tool and worker process: as many as a tools worker runs steps at once by
# default (ORCH_TOOLS_WORKER_CONCURRENCY), so a healthy tool never waits for one.
DEFAULT_TOOL_THREADS = 16
MAX_TOOL_THREADS = 1024


@dataclass(frozen=True)
class Timeout:
    """Seconds to connect and to wait for the answer."""

    connect: float = 2.0
    read: float = 10.0

    def __post_init__(self) -> None:
        if self.connect <= 0 or self.read <= 0:
            raise ToolDefinitionError(
                f"tool timeouts must be positive seconds, got connect={self.connect} "
                f"read={self.read}"
            )


@dataclass(frozen=True)
class Tool:
    """A declared tool. Exactly one of ``fn`` and ``http_path`` is set."""

    name: str
    timeout: Timeout
    fallback: Callable[[dict[str, JSON]], JSON]
    fn: Callable[[dict[str, JSON]], JSON] | None = None
    http_path: str | None = None
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    threads: int = DEFAULT_TOOL_THREADS

    @property
    def is_http(self) -> bool:
        return self.http_path is not None


def _fallback_fn(fallback: Any) -> Callable[[dict[str, JSON]], JSON]:
    if callable(fallback):
        return fallback
    return lambda _input: fallback


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def declare(
        self,
        name: str,
        *,
        fn: Callable[[dict[str, JSON]], JSON] | None = None,
        http: bool | str = False,
        timeout: Timeout | float | None = None,
        fallback: Any = _NO_FALLBACK,
        breaker: BreakerPolicy | None = None,
        threads: int = DEFAULT_TOOL_THREADS,
    ) -> Tool:
        """Register a tool; raises ``ToolDefinitionError`` without a timeout or fallback.

        ``http=True`` calls ``POST {ORCH_TOOLS_URL}/tools/{name}``; a string is the path.
        ``fallback`` is a JSON value, or a function of the tool's input returning one:
        it answers when the tool's breaker is open or its last attempt failed.
        ``breaker`` sets when the tool's fleet-wide breaker opens (default: half of the
        last 20 calls failed, at least 10 seen) and how long before a probe.
        ``threads`` bounds the threads each worker process gives this tool's calls
        (default 16): calls that outlive the timeout keep theirs until the tool returns,
        and once all are held so, calls fail at once (counted by the breaker) without
        touching any other tool's threads.
        """
        if not NAME_PATTERN.match(name):
            raise ToolDefinitionError(f"tool name {name!r} must be 1-64 of a-z 0-9 _ . -")
        if fallback is _NO_FALLBACK:
            raise ToolDefinitionError(
                f"tool {name!r} has no fallback: declare fallback= (a value or a function of "
                "the input) so an outage degrades the step instead of failing it"
            )
        if timeout is None:
            raise ToolDefinitionError(
                f"tool {name!r} has no timeout: declare timeout= (seconds, or Timeout(...))"
            )
        if (fn is None) == (not http):
            raise ToolDefinitionError(f"tool {name!r}: give exactly one of fn= and http=")
        if isinstance(threads, bool) or not isinstance(threads, int) or not (
                1 <= threads <= MAX_TOOL_THREADS):
            raise ToolDefinitionError(
                f"tool {name!r}: threads must be a whole number from 1 to {MAX_TOOL_THREADS}, "
                f"got {threads!r}")
        bounds = timeout if isinstance(timeout, Timeout) else Timeout(read=float(timeout))
        path = (http if isinstance(http, str) else f"/tools/{name}") if http else None
        policy = breaker or BreakerPolicy(
            probe_timeout=bounds.connect + bounds.read + 1.0)
        tool = Tool(name=name, timeout=bounds, fallback=_fallback_fn(fallback), fn=fn,
                    http_path=path, breaker=policy, threads=threads)
        self._tools[name] = tool
        return tool

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "none"
            raise UnknownTool(f"no tool named {name!r} (registered: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._tools)


tools = ToolRegistry()
declare_tool = tools.declare
