"""An OpenAI-compatible chat provider that enforces per-key limits exactly.

``POST /v1/chat/completions`` with Bearer keys. Each key has requests-per-minute and
tokens-per-minute and a concurrency limit; over any of them the answer is a 429 with
``retry-after`` and rate-limit headers. The minute is a rolling 60 s window
(``window="rolling"``, the default) or, like many gateways, fixed one-minute windows on
the simulator's own wall clock starting at ``window_phase`` seconds past each minute
(``window="fixed"``). ``retry_after`` replaces every 429's real wait by a fixed figure
(gateways answer ``retry-after: 60`` whatever the reset). ``header_style`` picks the
dialect: ``openai`` (``x-ratelimit-remaining-requests``, ``x-ratelimit-reset-requests``
as a duration), ``anthropic`` (``anthropic-ratelimit-requests-remaining``,
``...-reset`` as an RFC 3339 time) or ``gateway`` (``x-ratelimit-<header_scope>-limit-
requests`` and ``-remaining-requests``, and the same for tokens, no reset). Tokens
are reserved on admission (prompt estimate + max_tokens) and settled to the real usage
when the completion ends. Latency, 5xx errors, hangs and a full outage are injectable,
also at run time (``POST /admin/config``). ``GET /stats`` is the ground truth the tests
and benchmarks check the limiter against: it never shows a key, only its index.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import sys
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from orchestrator.devstack.simulators.server import ProcessHandle, serve_socket, start_process

WINDOW = 60.0
LABELS = ("billing", "shipping", "technical", "account", "other")
REPLY_WORDS = (
    "Thank", "you", "for", "reaching", "out.", "We", "are", "looking", "into", "your",
    "request", "and", "will", "follow", "up", "with", "the", "details", "shortly.",
)


@dataclass(frozen=True)
class LLMSimConfig:
    keys: tuple[str, ...] = ("sim-key-1", "sim-key-2")
    rpm: int = 600
    tpm: int = 400_000
    concurrency: int = 20
    latency: float = 0.5
    jitter: float = 0.1
    completion_tokens: int = 40
    error_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 120.0
    outage: bool = False
    model: str = "sim-gpt"
    window: str = "rolling"  # rolling | fixed
    window_phase: float = 0.0  # fixed windows start this many seconds past each minute
    retry_after: float | None = None  # every 429 says this, whatever the real wait
    header_style: str = "openai"  # openai | anthropic | gateway
    header_scope: str = "key"  # the <scope> of the gateway style's header names

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, not {self.window!r}")
        if self.header_style not in HEADER_STYLES:
            raise ValueError(f"header_style must be one of {HEADER_STYLES}, "
                             f"not {self.header_style!r}")


WINDOWS = ("rolling", "fixed")
HEADER_STYLES = ("openai", "anthropic", "gateway")


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(math.ceil(len(str(m.get("content") or "")) / 4) + 4 for m in messages) + 2


@dataclass
class KeyState:
    index: int
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, str]] = field(default_factory=deque)
    token_amounts: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    busy: float = 0.0  # slot-seconds held by the calls that ended
    holding: dict[str, float] = field(default_factory=dict)  # call -> when it took its slot
    revoked: bool = False
    fixed_index: int | None = None  # the fixed window ``requests`` and ``tokens`` count
    stats: dict[str, int] = field(default_factory=lambda: {
        "requests": 0, "succeeded": 0, "rate_limited_429": 0, "429_rpm": 0, "429_tpm": 0,
        "429_concurrency": 0, "unauthorized": 0, "server_errors": 0, "hangs": 0,
        "prompt_tokens": 0, "completion_tokens": 0, "max_in_flight": 0,
        "max_requests_60s": 0, "max_tokens_60s": 0,
    })

    def prune(self, now: float, fixed_index: int | None = None) -> None:
        if fixed_index is not None:
            # A fixed window forgets everything at its boundary, however recent.
            if fixed_index != self.fixed_index:
                self.fixed_index = fixed_index
                self.requests.clear()
                self.tokens.clear()
                self.token_amounts.clear()
            return
        while self.requests and self.requests[0] <= now - WINDOW:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= now - WINDOW:
            _, rid = self.tokens.popleft()
            self.token_amounts.pop(rid, None)

    def tokens_used(self) -> int:
        return sum(self.token_amounts.values())

    def busy_seconds(self, now: float) -> float:
        """Slot-seconds held so far, the calls in flight counted up to ``now``."""
        return self.busy + sum(now - since for since in self.holding.values())


class LLMProvider:
    """The simulator's state: one event loop, so every count is exact."""

    def __init__(self, config: LLMSimConfig) -> None:
        self.config = config
        self.keys = {k: KeyState(i) for i, k in enumerate(config.keys)}
        self.started = time.monotonic()

    def _window(self) -> tuple[int | None, float]:
        """The fixed window's index and seconds until it ends (rolling: None, 0)."""
        if self.config.window != "fixed":
            return None, 0.0
        shifted = time.time() - self.config.window_phase
        index = math.floor(shifted / WINDOW)
        return index, (index + 1) * WINDOW - shifted

    def prune(self, state: KeyState, now: float) -> None:
        state.prune(now, self._window()[0])

    def resets(self, state: KeyState, now: float) -> tuple[float, float]:
        """Seconds until a request, and until the oldest tokens, leave the count."""
        index, left = self._window()
        if index is not None:
            return left, left
        reset_req = (state.requests[0] + WINDOW - now) if state.requests else 0.0
        reset_tok = (state.tokens[0][0] + WINDOW - now) if state.tokens else 0.0
        return max(0.0, reset_req), max(0.0, reset_tok)

    def headers(self, state: KeyState, now: float) -> dict[str, str]:
        c = self.config
        left_req = max(0, c.rpm - len(state.requests))
        left_tok = max(0, c.tpm - state.tokens_used())
        reset_req, reset_tok = self.resets(state, now)
        if c.header_style == "anthropic":
            wall = time.time()
            return {
                "anthropic-ratelimit-requests-limit": str(c.rpm),
                "anthropic-ratelimit-requests-remaining": str(left_req),
                "anthropic-ratelimit-requests-reset": _rfc3339(wall + reset_req),
                "anthropic-ratelimit-tokens-limit": str(c.tpm),
                "anthropic-ratelimit-tokens-remaining": str(left_tok),
                "anthropic-ratelimit-tokens-reset": _rfc3339(wall + reset_tok),
            }
        if c.header_style == "gateway":
            scope = c.header_scope
            return {
                f"x-ratelimit-{scope}-limit-requests": str(c.rpm),
                f"x-ratelimit-{scope}-remaining-requests": str(left_req),
                f"x-ratelimit-{scope}-limit-tokens": str(c.tpm),
                f"x-ratelimit-{scope}-remaining-tokens": str(left_tok),
            }
        return {
            "x-ratelimit-limit-requests": str(c.rpm),
            "x-ratelimit-remaining-requests": str(left_req),
            "x-ratelimit-reset-requests": f"{reset_req:.3f}s",
            "x-ratelimit-limit-tokens": str(c.tpm),
            "x-ratelimit-remaining-tokens": str(left_tok),
            "x-ratelimit-reset-tokens": f"{reset_tok:.3f}s",
        }

    @staticmethod
    def error(status: int, message: str, kind: str, headers: dict[str, str] | None = None,
              code: str | None = None) -> JSONResponse:
        body = {"error": {"message": message, "type": kind, "code": code, "param": None}}
        return JSONResponse(body, status_code=status, headers=headers)

    def too_many(self, state: KeyState, now: float, reason: str, wait: float) -> JSONResponse:
        state.stats["rate_limited_429"] += 1
        state.stats[f"429_{reason}"] += 1
        headers = self.headers(state, now)
        if self.config.retry_after is not None:
            # A coarse gateway: one figure for every 429, and no finer header beside it.
            headers["retry-after"] = f"{self.config.retry_after:g}"
        else:
            headers["retry-after"] = str(max(1, math.ceil(wait)))
            headers["retry-after-ms"] = str(max(1, int(wait * 1000)))
        return self.error(429, f"Rate limit reached ({reason}) for key #{state.index}",
                          "requests" if reason != "tpm" else "tokens", headers,
                          "rate_limit_exceeded")

    async def complete(self, request: Request) -> JSONResponse:
        c = self.config
        auth = request.headers.get("authorization", "")
        secret = auth[7:] if auth.lower().startswith("bearer ") else ""
        state = self.keys.get(secret)
        if state is None or state.revoked:
            if state is not None:
                state.stats["unauthorized"] += 1
            return self.error(401, "Incorrect API key provided.", "invalid_request_error",
                              code="invalid_api_key")
        state.stats["requests"] += 1
        try:
            body = await request.json()
            messages = list(body["messages"])
            max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 256)
        except (ValueError, KeyError, TypeError):
            return self.error(400, "messages is required", "invalid_request_error")
        now = time.monotonic()
        self.prune(state, now)
        if c.outage:
            state.stats["server_errors"] += 1
            return self.error(503, "The server is overloaded or not ready.", "server_error")
        if state.in_flight >= c.concurrency:
            return self.too_many(state, now, "concurrency", 1.0)
        reset_req, reset_tok = self.resets(state, now)
        if len(state.requests) >= c.rpm:
            return self.too_many(state, now, "rpm", reset_req)
        prompt = estimate_tokens(messages)
        reserved = prompt + max_tokens
        if state.tokens_used() + reserved > c.tpm:
            return self.too_many(state, now, "tpm", reset_tok if state.tokens else WINDOW)
        rid = uuid.uuid4().hex
        state.requests.append(now)
        state.tokens.append((now, rid))
        state.token_amounts[rid] = reserved
        state.in_flight += 1
        state.holding[rid] = time.monotonic()
        s = state.stats
        s["max_in_flight"] = max(s["max_in_flight"], state.in_flight)
        s["max_requests_60s"] = max(s["max_requests_60s"], len(state.requests))
        s["max_tokens_60s"] = max(s["max_tokens_60s"], state.tokens_used())
        try:
            roll = random.random()
            if roll < c.error_rate:
                await asyncio.sleep(c.latency / 5)
                s["server_errors"] += 1
                return self.error(500, "The server had an error processing your request.",
                                  "server_error")
            if roll < c.error_rate + c.hang_rate:
                s["hangs"] += 1
                await asyncio.sleep(c.hang_seconds)
            delay = max(0.0, random.gauss(c.latency, c.jitter)) if c.jitter else c.latency
            await asyncio.sleep(delay)
            completion = min(max_tokens, c.completion_tokens)
            content = self.reply(messages, completion)
            if rid in state.token_amounts:  # settle the reservation to the real usage
                state.token_amounts[rid] = prompt + completion
            s["succeeded"] += 1
            s["prompt_tokens"] += prompt
            s["completion_tokens"] += completion
            done = time.monotonic()
            self.prune(state, done)
            return JSONResponse({
                "id": f"chatcmpl-{rid[:24]}", "object": "chat.completion",
                "created": int(time.time()), "model": body.get("model") or c.model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion},
            }, headers=self.headers(state, done))
        finally:
            state.in_flight -= 1
            state.busy += time.monotonic() - state.holding.pop(rid)

    @staticmethod
    def reply(messages: list[dict[str, Any]], tokens: int) -> str:
        text = " ".join(str(m.get("content") or "") for m in messages)
        digest = int(hashlib.sha256(text.encode()).hexdigest(), 16)
        if "label" in text.lower() and "classify" in text.lower():
            return LABELS[digest % len(LABELS)]
        words = REPLY_WORDS
        return " ".join(words[i % len(words)] for i in range(max(1, tokens)))

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        per_key = {str(s.index): dict(s.stats, revoked=s.revoked, in_flight=s.in_flight,
                                      busy_seconds=round(s.busy_seconds(now), 3))
                   for s in self.keys.values()}
        totals: dict[str, int] = {}
        for s in self.keys.values():
            for name, value in s.stats.items():
                if name.startswith("max_"):
                    continue
                totals[name] = totals.get(name, 0) + value
        # Slot-seconds held by answered and unanswered calls: over a window, divided by
        # concurrency x keys x seconds, how full the provider's slots were.
        busy = round(sum(s.busy_seconds(now) for s in self.keys.values()), 3)
        limits = {"rpm": self.config.rpm, "tpm": self.config.tpm,
                  "concurrency": self.config.concurrency}
        return {"totals": totals, "busy_seconds": busy, "keys": per_key, "limits": limits,
                "config": {k: v for k, v in asdict(self.config).items() if k != "keys"}}


_PATCHABLE = {f.name: f.type for f in fields(LLMSimConfig) if f.name not in ("keys",)}


def create_app(config: LLMSimConfig | None = None) -> Starlette:
    """The simulator as an ASGI app; its state is ``app.state.provider``."""
    provider = LLMProvider(config or LLMSimConfig())

    async def complete(request: Request) -> JSONResponse:
        return await provider.complete(request)

    async def stats(_request: Request) -> JSONResponse:
        return JSONResponse(provider.stats())

    async def reset(_request: Request) -> JSONResponse:
        for key, state in list(provider.keys.items()):
            provider.keys[key] = KeyState(state.index, revoked=state.revoked)
        return JSONResponse({"reset": True})

    async def configure(request: Request) -> JSONResponse:
        patch = await request.json()
        unknown = sorted(set(patch) - set(_PATCHABLE))
        if not isinstance(patch, dict) or unknown:
            return JSONResponse({"error": f"unknown settings: {unknown}; "
                                          f"known: {sorted(_PATCHABLE)}"}, status_code=400)
        try:
            provider.config = replace(provider.config, **patch)
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"config": {k: v for k, v in asdict(provider.config).items()
                                        if k != "keys"}})

    async def revoke(request: Request) -> JSONResponse:
        body = await request.json()
        state = provider.keys.get(str(body.get("key", "")))
        if state is None:
            return JSONResponse({"error": "no such key"}, status_code=404)
        state.revoked = bool(body.get("revoked", True))
        return JSONResponse({"key_index": state.index, "revoked": state.revoked})

    async def models(_request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [
            {"id": provider.config.model, "object": "model", "owned_by": "simulator"}]})

    app = Starlette(routes=[
        Route("/v1/chat/completions", complete, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/stats/reset", reset, methods=["POST"]),
        Route("/admin/config", configure, methods=["POST"]),
        Route("/admin/revoke", revoke, methods=["POST"]),
    ])
    app.state.provider = provider
    return app


def start_in_process(config: LLMSimConfig, host: str = "127.0.0.1") -> ProcessHandle:
    """The simulator in a child process of its own, like a real provider: its event loop
    never waits for the caller's GIL (in a thread of a busy process it would, and count
    the calls late). Its state is reached over HTTP only (``/stats``, ``/admin/config``)."""
    fields_ = asdict(config) | {"keys": list(config.keys)}
    command = [sys.executable, "-m", __name__, json.dumps(fields_)]
    return start_process(command, "/v1/models", host)


def _serve_child(argv: list[str]) -> None:
    """``python -m ...llm_provider CONFIG_JSON FD``: :func:`start_in_process`'s child."""
    config, fd = json.loads(argv[0]), int(argv[1])
    config["keys"] = tuple(config["keys"])
    serve_socket(create_app(LLMSimConfig(**config)), fd)


if __name__ == "__main__":
    _serve_child(sys.argv[1:])
