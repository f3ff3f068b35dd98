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
from dtma.domain.oauth import OAUTH_PRINCIPAL, JwtCaller
from dtma.errors import DtmaError, IssuerUnavailable, ScopeRefused, TokenRefused
from dtma.gateway.oauth import JwtVerifier, looks_like_jwt
from dtma.gateway.tokens import Grant
from dtma.observability.metrics import METRICS, LabelledChildren, route_label
from dtma.spec.models import is_dns_label

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = frozenset({"/v1/health", "/v1/ready"})
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID = web.RequestKey("request_id", str)
# Who made the request: AGENT_PRINCIPAL (the API token) or a client token's id.
PRINCIPAL = web.RequestKey("principal", str)
# A JWT caller's issuer, subject and claims (never the token), on MCP requests it opened.
CALLER = web.RequestKey("caller", JwtCaller)
# RFC 9728: served without auth (api/oauth.py).
OAUTH_METADATA_PREFIX = "/.well-known/oauth-protected-resource/"
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
    oauth: JwtVerifier | None = None,
) -> web.middleware:  # type: ignore[valid-type]
    """The API token opens everything; a client token (`scoped`) only its own toolbox's MCP
    endpoint: 403 anywhere else, 401 once revoked or unknown. With OAuth issuers configured
    (`oauth`), a JWT opens the MCP endpoints of the toolboxes it grants (gateway/oauth.py), and
    a 401 on an MCP endpoint points at its RFC 9728 metadata."""
    expected = token.encode()
    public = PUBLIC_PATHS | ({"/metrics"} if public_metrics else set())
    oauth = oauth if oauth is not None and oauth.enabled else None

    def refused(mcp: re.Match[str] | None, message: str, error: str | None) -> web.Response:
        challenge = 'Bearer realm="dtma"'
        if mcp is not None and oauth is not None:
            challenge = f'Bearer resource_metadata="{oauth.metadata_url(mcp.group(1))}"'
        if error:
            challenge += f', error="{error}"'
        return error_response(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})

    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in public or request.path.startswith(OAUTH_METADATA_PREFIX):
            return await handler(request)
        mcp = MCP_PATH.fullmatch(request.path)
        if mcp is not None and not is_dns_label(mcp.group(1)):
            mcp = None  # no toolbox can have that id; and it is not fit for a header
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return refused(mcp, "missing bearer token", None)
        presented = presented.strip()
        if hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected):
            request[PRINCIPAL] = AGENT_PRINCIPAL
            return await handler(request)
        grant = scoped(presented) if scoped is not None else None
        if grant is not None:
            if mcp is None or mcp.group(1) != grant.toolbox:
                return error_response(
                    403,
                    "forbidden",
                    "a client token opens only the MCP endpoint of its own toolbox "
                    f"(/v1/toolboxes/{grant.toolbox}/mcp)",
                )
            request[PRINCIPAL] = grant.token_id
            return await handler(request)
        if oauth is not None and mcp is not None and looks_like_jwt(presented):
            return await _with_jwt(oauth, request, handler, presented, mcp, refused)
        return refused(mcp, "invalid bearer token", "invalid_token")

    return mw


async def _with_jwt(
    oauth: JwtVerifier,
    request: web.Request,
    handler: Handler,
    presented: str,
    mcp: re.Match[str],
    refused: Callable[[re.Match[str] | None, str, str | None], web.Response],
) -> web.StreamResponse:
    """Verify a JWT for the MCP endpoint `mcp` names: 401 invalid_token, 403
    insufficient_scope, 503 while the issuer's keys cannot be had; else on to the handler."""
    toolbox = mcp.group(1)
    try:
        caller = await oauth.verify(presented, toolbox)
    except TokenRefused as exc:
        log.info("oauth_token_refused", toolbox=toolbox, reason=exc.message)
        return refused(mcp, f"invalid bearer token: {exc.message}", "invalid_token")
    except ScopeRefused as exc:
        scopes = " ".join(oauth.scopes(toolbox))
        challenge = (
            f'Bearer resource_metadata="{oauth.metadata_url(toolbox)}", '
            f'error="insufficient_scope"' + (f', scope="{scopes}"' if scopes else "")
        )
        return error_response(
            403, "forbidden", exc.message, headers={"WWW-Authenticate": challenge}
        )
    except IssuerUnavailable:
        return error_response(
            503,
            "issuer_unavailable",
            "the token's issuer cannot be reached to check it; retry shortly",
            headers={"Retry-After": "5"},
        )
    request[PRINCIPAL] = OAUTH_PRINCIPAL
    request[CALLER] = caller
    return await handler(request)


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
