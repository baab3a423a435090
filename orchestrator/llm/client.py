"""One chat completion against an OpenAI-compatible endpoint, over plain HTTP.

The request and response are the OpenAI wire format (``POST {base}/chat/completions``,
Bearer auth, ``usage`` in the body), so the same code talks to the simulator and to the
real API. Errors come back classified, never with the key in them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float = 0.0

    def body(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": self.messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }


@dataclass(frozen=True)
class ChatResult:
    content: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderFailure:
    """A call that did not produce a completion, and why."""

    status: int | None
    reason: str
    retry_after: float | None
    headers: dict[str, str]

    @property
    def rate_limited(self) -> bool:
        return self.status == 429

    @property
    def unauthorized(self) -> bool:
        return self.status in (401, 403)

    @property
    def transient(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


# Rate-limit feedback of every dialect (OpenAI's and gateways' x-ratelimit-*, Anthropic's).
_KEPT_HEADERS = ("x-", "anthropic-ratelimit-", "retry-after")


def _retry_after(headers: httpx.Headers) -> float | None:
    if "retry-after-ms" in headers:
        try:
            return float(headers["retry-after-ms"]) / 1000.0
        except ValueError:
            pass
    if "retry-after" in headers:
        try:
            return float(headers["retry-after"])
        except ValueError:
            return None
    return None


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        message = error.get("message") if isinstance(error, dict) else str(error)
    except ValueError:
        message = response.text[:200]
    return f"HTTP {response.status_code}: {message}"


def chat(
    http: httpx.Client,
    *,
    base_url: str,
    api_key: str,
    request: ChatRequest,
    timeout: float,
) -> ChatResult | ProviderFailure:
    """Send one chat completion; a completion or a classified failure, never an exception."""
    try:
        response = http.post(
            f"{base_url}/chat/completions",
            json=request.body(),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        )
    except httpx.TimeoutException:
        return ProviderFailure(None, f"timed out after {timeout:.0f}s", None, {})
    except httpx.HTTPError as exc:
        return ProviderFailure(None, f"{type(exc).__name__}: {exc}", None, {})
    headers = {k.lower(): v for k, v in response.headers.items()
               if k.lower().startswith(_KEPT_HEADERS)}
    if response.status_code != 200:
        return ProviderFailure(
            response.status_code, _error_message(response), _retry_after(response.headers),
            headers,
        )
    try:
        data = response.json()
        usage = data.get("usage") or {}
        return ChatResult(
            content=data["choices"][0]["message"]["content"] or "",
            model=data.get("model", request.model),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            headers=headers,
        )
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return ProviderFailure(502, f"malformed completion: {exc}", None, headers)
