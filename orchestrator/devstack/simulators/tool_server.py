"""An HTTP tool server with injectable latency, errors, hangs and per-tool outages.

``POST /tools/{name}`` with a JSON body. Tools: ``lookup_order``, ``search_kb``, ``echo``.
``POST /admin/config`` changes latency and rates at run time, ``POST /admin/outage``
switches one tool to always fail (``error``) or never answer (``hang``). ``GET /stats``
counts per tool, exactly (one event loop).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass(frozen=True)
class ToolSimConfig:
    latency: float = 0.05
    jitter: float = 0.01
    error_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 60.0


def _lookup_order(body: dict[str, Any]) -> dict[str, Any]:
    ref = str(body.get("order_id") or body.get("ticket_id") or body.get("customer_id") or "?")
    digest = int(hashlib.sha256(ref.encode()).hexdigest(), 16)
    return {
        "order_id": f"O-{digest % 1_000_000:06d}",
        "status": ("processing", "shipped", "delivered", "returned")[digest % 4],
        "items": 1 + digest % 3,
        "eta_days": digest % 7,
        "customer_id": body.get("customer_id"),
    }


def _search_kb(body: dict[str, Any]) -> dict[str, Any]:
    query = str(body.get("query", ""))
    return {"query": query, "articles": [f"KB-{abs(hash(query)) % 900 + 100}"]}


TOOLS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "lookup_order": _lookup_order,
    "search_kb": _search_kb,
    "echo": lambda body: {"echo": body},
}


class ToolServer:
    def __init__(self, config: ToolSimConfig) -> None:
        self.config = config
        self.outages: dict[str, str] = {}
        self.stats: dict[str, dict[str, int]] = {}

    def counts(self, tool: str) -> dict[str, int]:
        return self.stats.setdefault(tool, {"calls": 0, "ok": 0, "errors": 0, "hangs": 0,
                                            "in_flight": 0, "max_in_flight": 0})

    async def call(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        if name not in TOOLS:
            return JSONResponse({"error": f"no tool named {name!r}"}, status_code=404)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        c = self.config
        counts = self.counts(name)
        counts["calls"] += 1
        counts["in_flight"] += 1
        counts["max_in_flight"] = max(counts["max_in_flight"], counts["in_flight"])
        try:
            outage = self.outages.get(name)
            roll = random.random()
            if outage == "hang" or (outage is None and roll < c.hang_rate):
                counts["hangs"] += 1
                await asyncio.sleep(c.hang_seconds)
            if outage == "error" or (outage is None and c.hang_rate <= roll
                                     < c.hang_rate + c.error_rate):
                counts["errors"] += 1
                await asyncio.sleep(c.latency / 5)
                return JSONResponse({"error": f"{name} is unavailable"}, status_code=503)
            delay = max(0.0, random.gauss(c.latency, c.jitter)) if c.jitter else c.latency
            await asyncio.sleep(delay)
            counts["ok"] += 1
            return JSONResponse(TOOLS[name](body if isinstance(body, dict) else {}))
        finally:
            counts["in_flight"] -= 1


_PATCHABLE = {f.name for f in fields(ToolSimConfig)}


def create_app(config: ToolSimConfig | None = None) -> Starlette:
    """The tool simulator as an ASGI app; its state is ``app.state.tools``."""
    server = ToolServer(config or ToolSimConfig())

    async def call(request: Request) -> JSONResponse:
        return await server.call(request)

    async def stats(_request: Request) -> JSONResponse:
        totals: dict[str, int] = {}
        for counts in server.stats.values():
            for name, value in counts.items():
                if not name.startswith("max_") and name != "in_flight":
                    totals[name] = totals.get(name, 0) + value
        return JSONResponse({"totals": totals, "tools": server.stats,
                             "outages": server.outages, "config": asdict(server.config)})

    async def reset(_request: Request) -> JSONResponse:
        server.stats = {}
        return JSONResponse({"reset": True})

    async def configure(request: Request) -> JSONResponse:
        patch = await request.json()
        if not isinstance(patch, dict) or set(patch) - _PATCHABLE:
            return JSONResponse({"error": f"known settings: {sorted(_PATCHABLE)}"},
                                status_code=400)
        try:
            server.config = replace(server.config, **patch)
        except TypeError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"config": asdict(server.config)})

    async def outage(request: Request) -> JSONResponse:
        body = await request.json()
        tool, mode = body.get("tool"), body.get("mode")
        if tool not in TOOLS or mode not in ("hang", "error", None):
            return JSONResponse({"error": "give tool (a known tool) and mode "
                                          "(hang, error or null)"}, status_code=400)
        if mode is None:
            server.outages.pop(tool, None)
        else:
            server.outages[tool] = mode
        return JSONResponse({"outages": server.outages})

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[
        Route("/tools/{name}", call, methods=["POST"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/stats/reset", reset, methods=["POST"]),
        Route("/admin/config", configure, methods=["POST"]),
        Route("/admin/outage", outage, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ])
    app.state.tools = server
    return app
