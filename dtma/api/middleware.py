"""Request ids, bearer auth and error mapping: every response passes through here."""

from __future__ import annotations

import hmac
import itertools
import re
import secrets
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from dtma.api.errors import error_response, status_for
from dtma.domain.access import AGENT_PRINCIPAL
from dtma.engine.access import Grant
from dtma.errors import DtmaError
from dtma.observability.metrics import METRICS, LabelledChildren, route_label

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = frozenset({"/v1/health", "/v1/ready"})
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID = web.RequestKey("request_id", str)
# Who made the request: AGENT_PRINCIPAL (the API token) or a client token's id.
PRINCIPAL = web.RequestKey("principal", str)
MCP_PATH = re.compile(r"/v1/toolboxes/([^/]+)/mcp")
_U32 = 0xFFFFFFFF


def request_id_middleware() -> web.middleware:  # type: ignore[valid-type]
    # Ids made here: a random prefix per process and a counter (16 hex digits, unique without a
    # system call per request).
    prefix, counter = secrets.token_hex(4), itertools.count(int.from_bytes(secrets.token_bytes(4)))

    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        rid = incoming if _safe_request_id(incoming) else f"{prefix}{next(counter) & _U32:08x}"
        request[REQUEST_ID] = rid
        bound = structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                # Keep the exception's own headers: 405 must say which methods are allowed.
                kept = {
                    k: v
                    for k, v in exc.headers.items()
                    if k.lower() not in ("content-type", "content-length")
                }
                response = error_response(
                    exc.status, _code_for(exc.status), exc.reason, headers=kept
                )
            response.headers[REQUEST_ID_HEADER] = rid
            return response
        finally:
            structlog.contextvars.reset_contextvars(**bound)

    return mw


def metrics_middleware() -> web.middleware:  # type: ignore[valid-type]
    """Count and time every request by route template (never the raw path)."""
    requests = LabelledChildren(METRICS.api_requests, METRICS)
    latency = LabelledChildren(METRICS.api_latency, METRICS)

    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = route_label(request)
            requests(route, request.method, str(status)).inc()
            latency(route, request.method).observe(time.perf_counter() - started)

    return mw


def auth_middleware(
    token: str,
    public_metrics: bool = True,
    scoped: Callable[[str], Grant | None] | None = None,
) -> web.middleware:  # type: ignore[valid-type]
    """The API token opens everything; a client token (`scoped`) only its own toolbox's MCP
    endpoint: 403 anywhere else, 401 once revoked or unknown."""
    expected = token.encode()
    public = PUBLIC_PATHS | ({"/metrics"} if public_metrics else set())

    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in public:
            return await handler(request)
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return error_response(
                401,
                "unauthorized",
                "missing bearer token",
                headers={"WWW-Authenticate": 'Bearer realm="dtma"'},
            )
        presented = presented.strip()
        if hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected):
            request[PRINCIPAL] = AGENT_PRINCIPAL
            return await handler(request)
        grant = scoped(presented) if scoped is not None else None
        if grant is not None:
            mcp = MCP_PATH.fullmatch(request.path)
            if mcp is None or mcp.group(1) != grant.toolbox:
                return error_response(
                    403,
                    "forbidden",
                    "a client token opens only the MCP endpoint of its own toolbox "
                    f"(/v1/toolboxes/{grant.toolbox}/mcp)",
                )
            request[PRINCIPAL] = grant.token_id
            return await handler(request)
        return error_response(
            401,
            "unauthorized",
            "invalid bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="dtma", error="invalid_token"'},
        )

    return mw


def error_middleware() -> web.middleware:  # type: ignore[valid-type]
    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except DtmaError as exc:
            status = status_for(exc)
            if status >= 500:
                log.error("request_failed", path=request.path, error=exc.message)
            return error_response(status, exc.code, exc.message, getattr(exc, "details", None))
        except Exception:
            log.exception("unhandled_error", path=request.path)
            return error_response(500, "internal", "internal error; see the agent's log")

    return mw


def _safe_request_id(value: str) -> bool:
    return 0 < len(value) <= 64 and all(c.isalnum() or c in "-_." for c in value)


def _code_for(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
    }.get(status, "error")
