"""create_app(): the aiohttp application for the control API."""

from __future__ import annotations

from aiohttp import web

from dtma import __version__
from dtma.api.errors import error_response
from dtma.api.middleware import auth_middleware, error_middleware, request_id_middleware
from dtma.api.routes_agent import add_agent_routes
from dtma.api.routes_toolboxes import add_routes
from dtma.engine.agent import Agent
from dtma.ports import Readiness

MAX_BODY_BYTES = 1024 * 1024


def create_app(
    *,
    token: str,
    readiness: Readiness,
    agent: Agent | None = None,
    max_body: int = MAX_BODY_BYTES,
) -> web.Application:
    """Build the app. The handlers see only the narrow capabilities passed in here."""
    app = web.Application(
        client_max_size=max_body,
        middlewares=[request_id_middleware(), auth_middleware(token), error_middleware()],
    )

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": __version__})

    async def ready(_: web.Request) -> web.Response:
        reasons = readiness.check()
        if reasons:
            return error_response(
                503,
                "not_ready",
                "agent is not ready",
                [{"loc": [r.split(":", 1)[0]], "msg": r.split(":", 1)[1].strip()} for r in reasons],
            )
        return web.json_response({"status": "ready"})

    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/ready", ready)
    if agent is not None:
        add_routes(app, agent)
        add_agent_routes(app)
    return app
