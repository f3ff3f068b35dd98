"""Agent-level routes: /v1/agent and the OpenAPI document."""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

from aiohttp import web

from dtma.api.params import query_int, query_label
from dtma.api.routes_toolboxes import agent_of
from dtma.api.schemas import AdoptOut, AgentOut, ErrorsOut
from dtma.domain.errors_journal import CATEGORIES
from dtma.errors import SpecInvalid


def add_agent_routes(app: web.Application) -> None:
    app.router.add_get("/v1/agent", get_agent)
    app.router.add_post("/v1/agent/adopt", post_adopt)
    app.router.add_get("/v1/openapi.json", get_openapi)
    app.router.add_get("/v1/errors", get_errors)


async def get_agent(request: web.Request) -> web.Response:
    info = AgentOut.model_validate(await agent_of(request).info())
    return web.json_response(info.model_dump(mode="json"))


async def post_adopt(request: web.Request) -> web.Response:
    adopted = AdoptOut.model_validate(agent_of(request).adopt_orphans())
    return web.json_response(adopted.model_dump(mode="json"))


async def get_openapi(request: web.Request) -> web.Response:
    # The first build takes tens of milliseconds of CPU: off the loop, as probes run on it.
    return web.json_response(await asyncio.to_thread(_openapi_document))


@cache
def _openapi_document() -> dict[str, Any]:
    """Built on the first request, not at start: building it builds every API model (0.7 MB
    and 50 ms of CPU that an idle agent need not spend; docs/benchmarks.md, "Idle agent").
    The document depends on nothing but the code, so one copy serves every app. Its module
    (the routes' table) loads with it."""
    from dtma.api.openapi import build_document

    return build_document()


async def get_errors(request: web.Request) -> web.Response:
    q = request.query
    category = q.get("category")
    if category is not None and category not in CATEGORIES:
        raise SpecInvalid(
            "invalid query parameter category",
            [{"loc": ["query", "category"], "msg": f"must be one of {', '.join(CATEGORIES)}"}],
        )
    resolved_raw = q.get("resolved")
    if resolved_raw not in (None, "true", "false"):
        raise SpecInvalid(
            "invalid query parameter resolved",
            [{"loc": ["query", "resolved"], "msg": "must be true or false"}],
        )
    limit = query_int(request, "limit", 1, 1000, 200)
    toolbox = query_label(request, "toolbox")
    rows = await agent_of(request).repo.errors(
        toolbox=toolbox,
        category=category,
        resolved=None if resolved_raw is None else resolved_raw == "true",
        limit=limit,
    )
    return web.json_response(ErrorsOut.model_validate({"items": rows}).model_dump(mode="json"))
