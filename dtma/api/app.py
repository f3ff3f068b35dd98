"""create_app(): the aiohttp application for the control API."""

from __future__ import annotations

from aiohttp import web

from dtma import __version__
from dtma.api.errors import error_response
from dtma.api.middleware import auth_middleware, error_middleware, request_id_middleware
from dtma.ports import Readiness

MAX_BODY_BYTES = 1024 * 1024


def create_app(*, token: str, readiness: Readiness) -> web.Application:
    """Build the app. The handlers see only the narrow capabilities passed in here."""
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
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
    return app
