"""The one way LLM steps reach a provider: wait for capacity, call, learn from the answer.

Each call waits in the fleet-wide limiter for a key with headroom, then calls it.
- 2xx: the lease is settled to the tokens the provider reports; a rate-limit budget at
  zero (OpenAI's, Anthropic's or a gateway's per-scope headers,
  :mod:`orchestrator.llm.ratelimit_headers`) cools that key down until its reset, so the
  limiter's view follows the provider's.
- 429 (provider limits drifted): that key cools down and the call goes back in line for
  another key; it never fails the step while the retry budget lasts. A reset header says
  how long; without one, a retry-after longer than ``probe_after`` is read as an upper
  bound (gateways answer ``retry-after: 60`` whatever their window's real reset): after
  ``probe_after`` (doubling while the probes get 429s) exactly one call probes the key,
  and its answer brings the key back or cools it again.
- 401/403: the key leaves the rotation fleet-wide for ``ORCH_LLM_KEY_COOLOFF``, then one
  call in the fleet probes it: an answer brings it back, a refusal doubles its cool-off
  (:mod:`orchestrator.llm.rotation`; logged by fingerprint, never by value).
- 5xx or timeout: counted by the provider's fleet-wide circuit breaker; the fallback
  provider, when configured, answers instead (through its own limiter), and while the
  breaker is open the primary is not called at all.
- A provider with every key out of rotation is skipped the same way: the fallback answers.
When no provider can answer, the step holds (``ProviderOutage``: retried after the
breaker's or a key's next probe without spending its retries) for up to
``ORCH_LLM_OUTAGE_HOLD``, then fails with the reason: which provider is down, which keys
were refused, with what status and when.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx
import pybreaker
import redis

from config import Settings
from orchestrator.breakers import BreakerPolicy, Breakers
from orchestrator.errors import ProviderOutage, StepFailed, TransientStepError
from orchestrator.llm.client import ChatRequest, ChatResult, ProviderFailure, chat
from orchestrator.llm.keys import ApiKey, Provider
from orchestrator.llm.limiter import Lease, Limiter, RedisLimiter
from orchestrator.llm.ratelimit_headers import exhausted_reset, parse_reset
from orchestrator.llm.rotation import cooloff_seconds
from orchestrator.llm.tokens import estimate_prompt
from orchestrator.telemetry import count

log = logging.getLogger(__name__)


class ProviderUnavailable(ProviderOutage):
    """The provider answered 5xx or did not answer in time."""


@dataclass(frozen=True)
class Completion:
    result: ChatResult
    provider: str
    key_id: str
    waited: float
    attempts: int


def providers(settings: Settings) -> list[Provider]:
    """The primary provider and, when configured, the fallback one."""
    def keys(secrets: list[str]) -> tuple[ApiKey, ...]:
        return tuple(ApiKey(s, settings.llm_rpm, settings.llm_tpm, settings.llm_concurrency)
                     for s in secrets)

    found = [Provider("primary", settings.llm_endpoint, settings.llm_model,
                      keys(settings.api_keys()))]
    if settings.llm_fallback_base_url:
        found.append(Provider("fallback", settings.llm_fallback_base_url,
                              settings.llm_fallback_model or settings.llm_model,
                              keys(settings.fallback_keys())))
    return found


__all__ = ["Completion", "Gateway", "ProviderUnavailable", "parse_reset", "providers"]


class Gateway:
    """LLM calls for one process, over the fleet-wide limiters of each provider."""

    def __init__(self, settings: Settings, client: redis.Redis, http: httpx.Client,
                 breakers: Breakers, *, limiters: Mapping[str, Limiter] | None = None,
                 window_margin: float | None = None, probe_after: float | None = None) -> None:
        """``limiters``: one per provider name (default: the fleet's, in ``client``'s Redis,
        whose minute is ``window_margin`` seconds longer than the provider's; default
        ``ORCH_LLM_WINDOW_MARGIN``). ``probe_after``: seconds after a 429 without a reset
        header before one call probes the key (doubled at each 429 in a row, never past
        the retry-after; default ``ORCH_LLM_PROBE_AFTER``)."""
        self.settings = settings
        self.client = client
        self.http = http
        self.breakers = breakers
        self.breaker_policy = BreakerPolicy(
            window=20, min_calls=5, threshold=0.5, reset_timeout=15.0,
            probe_timeout=settings.llm_timeout + 5.0)
        self.providers = providers(settings)
        if window_margin is None:
            window_margin = settings.llm_window_margin
        self.limiters: dict[str, Limiter] = (
            dict(limiters) if limiters is not None else
            {p.name: RedisLimiter(client, p, lease_seconds=self.lease_seconds,
                                  cooloff=settings.llm_key_cooloff,
                                  window_margin=window_margin)
             for p in self.providers})
        self.probe_after = settings.llm_probe_after if probe_after is None else probe_after
        # key id -> (429s in a row without a reset header, monotonic time of its probe)
        self._strikes: dict[str, tuple[int, float]] = {}
        self._strikes_lock = threading.Lock()

    @property
    def lease_seconds(self) -> float:
        """How long a limiter lease outlives its call's start: the call's own timeout,
        and some margin."""
        return self.settings.llm_timeout + 5.0

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int,
                 temperature: float = 0.0,
                 should_stop: Callable[[], bool] | None = None) -> Completion:
        """One chat completion, from the primary provider or, when it is down, the fallback.

        Raises ``ProviderOutage`` when no provider can answer now (down, or every key out
        of rotation: the step holds), ``TransientStepError`` when calls stayed rate
        limited (the step is retried later), ``StepFailed`` for a request the provider
        refuses.
        """
        failures: list[ProviderOutage] = []
        for provider in self.providers:
            breaker = self.breakers.get(f"llm-{provider.name}", self.breaker_policy)
            failure: ProviderOutage
            try:
                return breaker.call(
                    lambda p=provider: self._complete_with(  # type: ignore[misc]
                        p, messages, max_tokens, temperature, should_stop),
                    is_failure=lambda exc: isinstance(exc, ProviderUnavailable),
                )
            except ProviderOutage as exc:  # down, or no usable key
                failure = exc
            except pybreaker.CircuitBreakerError:
                status = breaker.status()
                failure = ProviderUnavailable(
                    f"LLM provider {provider.name}: circuit breaker open",
                    retry_after=status.next_probe_in or self.breaker_policy.reset_timeout)
            failures.append(failure)
            if provider is not self.providers[-1]:
                log.warning("LLM provider %s unavailable (%s); using %s", provider.name,
                            failure, self.providers[-1].name)
        raise _outage(failures)

    def _complete_with(self, provider: Provider, messages: list[dict[str, str]],
                       max_tokens: int, temperature: float,
                       should_stop: Callable[[], bool] | None = None) -> Completion:
        limiter = self.limiters[provider.name]
        request = ChatRequest(provider.model, messages, max_tokens, temperature)
        tokens = estimate_prompt(messages) + max_tokens
        retry_after: float | None = None
        for attempt in range(1, self.settings.llm_retry_budget + 1):
            lease = limiter.acquire(tokens, max_wait=self.settings.llm_max_wait,
                                    should_stop=should_stop)
            if lease.probe:
                log.info("LLM key %s of %s: cool-off over, this call probes it", lease.key.id,
                         provider.name)
            outcome = chat(self.http, base_url=provider.base_url, api_key=lease.key.secret,
                           request=request, timeout=self.settings.llm_timeout)
            if isinstance(outcome, ChatResult):
                if lease.probe and limiter.restore(lease.key.id):
                    log.warning("LLM key %s of %s answered its probe: back in rotation",
                                lease.key.id, provider.name)
                    count(self.client, f"llm_keys_restored:{provider.name}")
                limiter.release(lease, outcome.prompt_tokens + outcome.completion_tokens)
                if self._strikes:
                    with self._strikes_lock:
                        self._strikes.pop(lease.key.id, None)
                count(self.client, f"llm_calls:{provider.name}")
                count(self.client, "llm_prompt_tokens", outcome.prompt_tokens)
                count(self.client, "llm_completion_tokens", outcome.completion_tokens)
                self._follow_headers(limiter, lease, outcome.headers)
                return Completion(outcome, provider.name, lease.key.id, lease.waited, attempt)
            try:
                # Before the release: a refused probe must send its key back while it
                # still holds the probe, or a second call could probe the key meanwhile.
                retry_after = self._handle_failure(provider, limiter, lease, outcome)
            finally:
                limiter.release(lease, None)
        raise TransientStepError(
            f"LLM provider {provider.name}: rate limited on {self.settings.llm_retry_budget} "
            "attempts", retry_after,
        )

    def _handle_failure(self, provider: Provider, limiter: Limiter, lease: Lease,
                        outcome: ProviderFailure) -> float | None:
        key = lease.key
        if outcome.unauthorized:
            assert outcome.status is not None
            # The provider's message is not logged: some quote part of the key.
            record = limiter.take_out(key, outcome.status, lease=lease)
            if record is None:
                log.warning("LLM key %s refused by %s (HTTP %s): already out of rotation",
                            key.id, provider.name, outcome.status)
                return None
            cooloff = cooloff_seconds(self.settings.llm_key_cooloff, record.strikes)
            log.error("LLM key %s refused by %s (HTTP %s)%s: out of rotation for %.0fs, "
                      "then one call probes it", key.id, provider.name, outcome.status,
                      " on its probe" if record.strikes > 1 else "", cooloff)
            count(self.client, f"llm_keys_revoked:{provider.name}")
            return None
        if outcome.rate_limited:
            pause = self._rate_limited(limiter, key, outcome)
            log.warning("LLM key %s got 429 from %s: cooling down %.2fs", key.id,
                        provider.name, pause)
            count(self.client, f"llm_429:{provider.name}")
            return pause
        if outcome.transient:
            raise ProviderUnavailable(f"LLM provider {provider.name}: {outcome.reason}",
                                      outcome.retry_after)
        raise StepFailed(f"LLM provider {provider.name} refused the request: {outcome.reason}")

    def _rate_limited(self, limiter: Limiter, key: ApiKey, outcome: ProviderFailure) -> float:
        """Cool ``key`` down after a 429; returns the seconds before it is tried again."""
        reset = exhausted_reset(outcome.headers)
        ceiling = outcome.retry_after
        if reset is not None:
            # A reset header is finer than a retry-after: follow the sooner of the two.
            pause = reset if ceiling is None else min(reset, ceiling)
            limiter.cool_down(key, pause)
            return pause
        if ceiling is None:
            ceiling = self.probe_after
        now = time.monotonic()
        with self._strikes_lock:
            strikes, probe_at = self._strikes.get(key.id, (0, 0.0))
            # 429s of calls admitted before the last pause ended are the same incident.
            if now >= probe_at:
                strikes += 1
                probe_at = now + self.probe_after * 2 ** (strikes - 1)
                self._strikes[key.id] = (strikes, probe_at)
        probe = max(0.001, probe_at - now)
        if probe >= ceiling:
            limiter.cool_down(key, ceiling)
            return ceiling
        # The retry-after is only an upper bound: one call probes at ``probe``; the rest
        # of the line waits for its answer, and for the ceiling at the latest.
        limiter.cool_down(key, probe, probe_until=ceiling)
        return probe

    @staticmethod
    def _follow_headers(limiter: Limiter, lease: Lease, headers: dict[str, str]) -> None:
        reset = exhausted_reset(headers)
        if reset:
            limiter.cool_down(lease.key, reset)


def _outage(failures: list[ProviderOutage]) -> ProviderOutage:
    """One outage out of each provider's: every reason said, retried at the soonest."""
    if len(failures) == 1:
        return failures[0]
    waits = [f.retry_after for f in failures if f.retry_after is not None]
    message = "; ".join(str(f) for f in failures)
    if all(isinstance(f, ProviderUnavailable) for f in failures):
        return ProviderUnavailable(message, min(waits, default=None))
    return ProviderOutage(message, min(waits, default=None))
