"""The one way LLM steps reach a provider: pick a key, call, classify the outcome."""

from __future__ import annotations

import itertools
import logging
import threading

from orchestrator import runtime
from orchestrator.errors import StepFailed, TransientStepError
from orchestrator.llm.client import ChatRequest, ChatResult, chat

log = logging.getLogger(__name__)


class KeyPool:
    """The provider keys of this process, rotated; a refused key leaves the rotation."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = list(keys)
        self._revoked: set[int] = set()
        self._cycle = itertools.cycle(range(len(keys)))
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._keys) - len(self._revoked)

    def next(self) -> tuple[int, str]:
        with self._lock:
            for _ in range(len(self._keys)):
                index = next(self._cycle)
                if index not in self._revoked:
                    return index, self._keys[index]
        raise StepFailed("every LLM API key was refused by the provider (401/403)")

    def revoke(self, index: int) -> None:
        with self._lock:
            self._revoked.add(index)


_pools: dict[tuple[str, ...], KeyPool] = {}
_pools_lock = threading.Lock()


def _pool(keys: list[str]) -> KeyPool:
    with _pools_lock:
        return _pools.setdefault(tuple(keys), KeyPool(keys))


def complete(
    messages: list[dict[str, str]], *, max_tokens: int, temperature: float = 0.0
) -> ChatResult:
    """One chat completion from the configured provider.

    Raises ``TransientStepError`` (with the provider's retry-after when given) for 429,
    5xx and timeouts, once every usable key was tried; ``StepFailed`` for other 4xx.
    """
    rt = runtime.current()
    settings = rt.settings
    pool = _pool(settings.api_keys())
    request = ChatRequest(settings.llm_model, messages, max_tokens, temperature)
    last_retry_after: float | None = None
    for _ in range(max(len(pool), 1)):
        index, key = pool.next()
        outcome = chat(rt.http, base_url=settings.llm_endpoint, api_key=key, request=request,
                       timeout=settings.llm_timeout)
        if isinstance(outcome, ChatResult):
            return outcome
        if outcome.unauthorized:
            log.error("LLM key #%d refused by the provider (%s); removed from rotation",
                      index, outcome.status)
            pool.revoke(index)
            continue
        if outcome.rate_limited:
            last_retry_after = outcome.retry_after
            continue
        if outcome.transient:
            raise TransientStepError(f"LLM provider: {outcome.reason}", outcome.retry_after)
        raise StepFailed(f"LLM provider refused the request: {outcome.reason}")
    if len(pool) == 0:
        raise StepFailed("every LLM API key was refused by the provider (401/403)")
    raise TransientStepError("LLM provider: rate limited on every key", last_retry_after)
