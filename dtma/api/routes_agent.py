"""Agent-level routes: /v1/agent and the OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from dtma.api.openapi import build_document
from dtma.api.routes_toolboxes import agent_of
from dtma.api.schemas import AgentOut

OPENAPI = web.AppKey("openapi", dict)


def add_agent_routes(app: web.Application) -> None:
    app[OPENAPI] = build_document()
    app.router.add_get("/v1/agent", get_agent)
    app.router.add_get("/v1/openapi.json", get_openapi)


async def get_agent(request: web.Request) -> web.Response:
    info = AgentOut.model_validate(await agent_of(request).info())
    return web.json_response(info.model_dump(mode="json"))


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])
