"""The LLM provider simulator as tests drive it: started per test, its stats and admin
endpoints, and the ``llm-ask`` load the gateway tests submit."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

import orchestrator
from orchestrator.devstack.simulators.llm_provider import LLMSimConfig, create_app
from orchestrator.devstack.simulators.server import ServerHandle, start_server

KEYS = ("sim-key-1", "sim-key-2")


class Provider:
    def __init__(self, handle: ServerHandle) -> None:
        self.handle = handle
        self.url = f"{handle.url}/v1"

    def stats(self) -> dict[str, object]:
        return dict(httpx.get(f"{self.handle.url}/stats").json())

    def key_stats(self, index: int) -> dict[str, int]:
        stats = httpx.get(f"{self.handle.url}/stats").json()
        return dict(stats["keys"][str(index)])

    def admin(self, path: str, body: dict[str, object]) -> None:
        httpx.post(f"{self.handle.url}/admin/{path}", json=body).raise_for_status()

    def refuse(self, key: str, refused: bool = True) -> None:
        self.admin("revoke", {"key": key, "revoked": refused})


@pytest.fixture
def provider() -> Iterator[Callable[..., Provider]]:
    """Start simulators with ``provider(**LLMSimConfig fields)``; all stop at teardown."""
    started: list[ServerHandle] = []

    def start(**config: object) -> Provider:
        handle = start_server(create_app(LLMSimConfig(keys=KEYS, **config)))  # type: ignore[arg-type]
        started.append(handle)
        return Provider(handle)

    yield start
    for handle in started:
        handle.stop()


def ask(n: int) -> list[str]:
    return [orchestrator.submit("llm-ask", {"question": f"question number {i}"})
            for i in range(n)]
