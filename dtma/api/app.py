"""create_app(): the aiohttp application for the control API."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dtma import __version__
from dtma.api.disconnects import DisconnectShield
from dtma.api.errors import error_response
from dtma.api.mcp_endpoint import add_mcp_routes
from dtma.api.middleware import (
    auth_middleware,
    error_middleware,
    metrics_middleware,
    request_id_middleware,
)
from dtma.api.oauth import add_oauth_routes
from dtma.api.open_streams import OpenStreams
from dtma.api.origin import OriginPolicy
from dtma.api.routes_access import add_access_routes
from dtma.api.routes_agent import add_agent_routes
from dtma.api.routes_toolboxes import add_routes
from dtma.engine.agent import Agent
from dtma.gateway.call_journal import CallJournal
from dtma.gateway.oauth import JwtVerifier
from dtma.gateway.tokens import AccessTokens
from dtma.observability.metrics import METRICS
from dtma.ports import Readiness

MAX_BODY_BYTES = 1024 * 1024


def create_app(
    *,
    token: str,
    readiness: Readiness,
    agent: Agent | None = None,
    max_body: int = MAX_BODY_BYTES,
    metrics_auth: bool = False,
    access: AccessTokens | None = None,
    calls: CallJournal | None = None,
    mcp_origins: tuple[str, ...] = (),
    oauth: JwtVerifier | None = None,
) -> web.Application:
    """Build the app. The handlers see only the narrow capabilities passed in here. `access`
    and `calls` default to fresh ones over the agent's repository (the caller loads the token
    index and flushes the journal: bootstrap.py)."""
    if agent is not None:
        access = access or AccessTokens(agent.repo)
        calls = calls or CallJournal(agent.repo, METRICS, agent.gateway.signature)
    shield = DisconnectShield()  # first: a disconnect never cuts the API's chain halfway
    app = web.Application(
        client_max_size=max_body,
        middlewares=[
            shield.middleware,
            metrics_middleware(),
            request_id_middleware(),
            auth_middleware(
                token,
                public_metrics=not metrics_auth,
                scoped=access.verify if access is not None else None,
                oauth=oauth,
            ),
            error_middleware(),
        ],
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

    app.on_cleanup.append(shield.close)
    app.router.add_get("/v1/health", health)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(METRICS.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app.router.add_get("/v1/ready", ready)
    app.router.add_get("/metrics", metrics)
    add_oauth_routes(app, oauth)
    if agent is not None and access is not None and calls is not None:
        streams = OpenStreams()
        access.on_forget(streams.cut)  # a revoked token's open GET streams close at once
        # First: aiohttp tries routes in order, and the MCP endpoint takes most requests.
        add_mcp_routes(
            app, agent.gateway, lambda: agent.started, calls, OriginPolicy(mcp_origins), streams
        )
        add_routes(app, agent)
        add_access_routes(app, access, calls)
        add_agent_routes(app)
    return app
