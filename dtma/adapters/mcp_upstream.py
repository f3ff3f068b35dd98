"""The gateway's client side: tools, prompts and resources on a server's held MCP session.

stdio calls share the probe's attach session (only one reader can own a container's stdout); the
SDK's ClientSession multiplexes concurrent requests over it and matches answers by JSON-RPC id.
HTTP calls use one `HttpUpstream` per container: a session held open by an owner task, opened on
the first call and again after it ends. Results cross into the engine as plain JSON dicts, so
nothing above the adapters sees the SDK's types. A transport failure (the session ended, the
server went away) is an `UpstreamUnavailable`, which the endpoint answers as a retryable error;
an MCP error the server itself returned propagates unchanged.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from typing import Any

import anyio
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT, ToolListChangedNotification
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import TypeAdapter

from dtma.adapters.mcp_grading import grade, ms_since, refusal_detail, stage
from dtma.adapters.mcp_relay import HttpRelay, envelope_version
from dtma.cancellation import cancel_and_wait, raise_if_cancelling, suppress_failures
from dtma.domain import probe as reasons
from dtma.domain.probe import ProbeResult
from dtma.errors import ServerUnavailable as UpstreamUnavailable
from dtma.observability.redaction import REDACTOR
from dtma.sdk_compat.client import negotiate_auto

# One TLS context for every held session's client, made here (this module is imported in a
# worker thread: dtma/lazy_import.py): httpx builds one per client otherwise, loading the CA
# store on the event loop (0.2 to 0.4 s on a loaded 2-core host). The upstreams are plain HTTP
# to container addresses, so it is never used for a handshake; nor is a proxy from the
# environment (trust_env=False), which could not reach a toolbox's internal network.
_TLS = ssl.create_default_context()

# A result as the wire JSON it arrived as (the SDK has validated it for the revision already).
_WIRE_RESULT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


def _short(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_short(e) for e in exc.exceptions)
    return REDACTOR.excerpt(str(exc) or type(exc).__name__, 200)


def _raise_if_transport(exc: MCPError, what: str) -> None:
    """The SDK reports a closed connection or its own timeout as an MCPError: those are about the
    session, not the server's answer, so they are retryable."""
    if exc.code in (CONNECTION_CLOSED, REQUEST_TIMEOUT):
        raise UpstreamUnavailable(f"{what}: {_short(exc)}") from exc


async def list_tool_defs(session: ClientSession, timeout: float) -> list[dict[str, Any]]:
    """Every tool of the server (all pages), each as its wire JSON (schemas untouched)."""
    from mcp import types

    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    try:
        with anyio.fail_after(timeout):
            while True:
                params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
                result = await session.list_tools(params=params)
                tools.extend(
                    t.model_dump(mode="json", by_alias=True, exclude_none=True)
                    for t in result.tools
                )
                cursor = result.next_cursor
                if not cursor:
                    return tools
    except MCPError as exc:
        _raise_if_transport(exc, "tools/list")
        raise
    except TimeoutError as exc:
        raise UpstreamUnavailable(f"tools/list: no answer within {timeout:g}s") from exc
    except Exception as exc:
        raise_if_cancelling()
        raise UpstreamUnavailable(f"tools/list failed: {_short(exc)}") from exc


async def call_tool(
    session: ClientSession, name: str, arguments: dict[str, Any] | None, timeout: float
) -> dict[str, Any]:
    """tools/call; the result as wire JSON. A tool's own failure is a result with `isError`, not
    an exception.

    Sent as the SDK's CallToolRequest through `send_request`, which stamps it for the
    negotiated revision and checks the answer against that revision's result schema, but
    returns it as the dict it arrived as: `call_tool` would also build the result's models,
    check structured content against the tool's output schema (the client's job, not a
    relay's) and be dumped back to JSON here, about a third of the agent's time per call."""
    from mcp import types

    request = types.CallToolRequest(
        params=types.CallToolRequestParams(name=name, arguments=arguments)
    )
    try:
        with anyio.fail_after(timeout):
            # The SDK takes a TypeAdapter here; its TypeVar is bound to models only.
            result = await session.send_request(request, _WIRE_RESULT)  # type: ignore[type-var]
    except MCPError as exc:
        _raise_if_transport(exc, f"tools/call {name}")
        raise
    except TimeoutError as exc:
        raise UpstreamUnavailable(f"tools/call {name}: no answer within {timeout:g}s") from exc
    except Exception as exc:
        raise_if_cancelling()
        raise UpstreamUnavailable(f"tools/call {name} failed: {_short(exc)}") from exc
    # A handshake-era server's result has no `resultType`; the SDK's CallToolResult defaults it
    # to "complete", which a 2026-07-28 client's answer must carry (the SDK's server drops it
    # for a handshake-era client).
    result.setdefault("resultType", "complete")
    return result


# Prompts and resources: the method, the SDK's request and result types, and for a listing the
# key of its items (every page is fetched).
_CATALOG: dict[str, tuple[str, str, str]] = {
    "prompts/list": ("ListPromptsRequest", "ListPromptsResult", "prompts"),
    "prompts/get": ("GetPromptRequest", "GetPromptResult", ""),
    "resources/list": ("ListResourcesRequest", "ListResourcesResult", "resources"),
    "resources/templates/list": (
        "ListResourceTemplatesRequest",
        "ListResourceTemplatesResult",
        "resourceTemplates",
    ),
    "resources/read": ("ReadResourceRequest", "ReadResourceResult", ""),
}
CATALOG_METHODS = frozenset(_CATALOG)


def offered(session: ClientSession) -> frozenset[str] | None:
    """Which of `prompts` and `resources` the server's negotiated capabilities offer; None when
    they are unknown (a stdio session re-attached without a new handshake)."""
    caps = session.server_capabilities
    if caps is None:
        return None
    return frozenset(k for k in ("prompts", "resources") if getattr(caps, k) is not None)


async def catalog_request(
    session: ClientSession, method: str, params: dict[str, Any] | None, timeout: float
) -> dict[str, Any]:
    """One prompts/resources request (one of CATALOG_METHODS) as wire JSON; a listing is read to
    its last page and returned as one. Errors as call_tool's."""
    from mcp import types

    request_name, result_name, items = _CATALOG[method]
    request_type, result_type = getattr(types, request_name), getattr(types, result_name)
    found: list[Any] = []
    cursor: str | None = None
    try:
        with anyio.fail_after(timeout):
            while True:
                page_params = {**(params or {}), **({"cursor": cursor} if cursor else {})}
                request = request_type.model_validate(
                    {"method": method, "params": page_params or None}
                )
                result = await session.send_request(request, result_type)
                body: dict[str, Any] = result.model_dump(
                    mode="json", by_alias=True, exclude_none=True
                )
                if not items:
                    return body
                found.extend(body.get(items, []))
                cursor = body.get("nextCursor")
                if not cursor:
                    return {items: found}
    except MCPError as exc:
        _raise_if_transport(exc, method)
        raise
    except TimeoutError as exc:
        raise UpstreamUnavailable(f"{method}: no answer within {timeout:g}s") from exc
    except Exception as exc:
        raise_if_cancelling()
        raise UpstreamUnavailable(f"{method} failed: {_short(exc)}") from exc


class ToolListWatch:
    """A session's `message_handler` that counts the server's `notifications/tools/list_changed`
    (so that a cached tool list is read again: gateway.pin). Other messages are ignored, as the
    SDK's default handler does. Event loop only."""

    def __init__(self) -> None:
        self.changes = 0

    async def __call__(self, message: Any) -> None:
        if isinstance(message, ToolListChangedNotification):
            self.changes += 1


class HttpUpstream:
    """One held MCP session with a streamable-HTTP server, reopened after it ends.

    Concurrency: `session()` may be called from any task; the first caller starts the owner task
    (which enters and exits the transport, as anyio requires) and all wait for it. `close()` is
    idempotent; the object is not usable afterwards."""

    def __init__(self, url: str, *, connect_timeout: float) -> None:
        self.url = url
        self._connect_timeout = connect_timeout
        self._session: ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._failure = ""
        self._graded: tuple[str, str] | None = None  # (reason, detail) of the last failed opening
        self.refused: int | None = None  # HTTP 401/403 on the current session, if any
        self._closed = False
        self._relay: HttpRelay | None = None
        self.tool_list = ToolListWatch()

    async def session(self) -> ClientSession:
        if self._closed:
            raise UpstreamUnavailable("the server is being removed")
        if self._task is None or self._task.done():
            self._ready = asyncio.Event()
            self._session = None
            self._task = asyncio.create_task(self._run(), name=f"upstream {self.url}")
        await self._ready.wait()
        if self._session is None:
            raise UpstreamUnavailable(f"cannot reach the server: {self._failure}")
        return self._session

    def held(self) -> ClientSession | None:
        """The session while it is open (never opens one): for a probe that must not open a
        session of its own."""
        if self._closed or self._task is None or self._task.done():
            return None
        return self._session

    async def open(self) -> ProbeResult | None:
        """Open the held session unless it is open. None once it is; else why it would not
        open, graded as a probe grades it (the step that failed, a timeout, credentials the
        server wants): the HTTP probe's first check is this opening, so a healthy server costs
        one session, the gateway's. Bounded: a server that wedges while its failed session is
        being closed cannot hold the probe."""
        t0 = time.perf_counter()
        bound = 2 * self._connect_timeout
        try:
            async with asyncio.timeout(bound):
                await self.session()
        except TimeoutError:
            return ProbeResult.failed(reasons.TIMEOUT, ms_since(t0), f"no session within {bound}s")
        except UpstreamUnavailable as exc:
            reason, detail = self._graded or (reasons.CONNECT_FAILED, str(exc))
            return ProbeResult.failed(reason, ms_since(t0), detail)
        return None

    def refusal(self, result: ProbeResult) -> ProbeResult:
        """`result`, or `unauthenticated` when the server has refused this session's
        credentials (HTTP 401/403) on a request since it opened."""
        if result.healthy or self.refused is None:
            return result
        return ProbeResult.failed(
            reasons.UNAUTHENTICATED, result.latency_ms, refusal_detail(self.refused)
        )

    async def _run(self) -> None:
        self.refused = None

        async def note_refusal(response: httpx2.Response) -> None:
            if response.status_code in (401, 403):
                self.refused = response.status_code

        async def negotiate(session: ClientSession) -> None:
            with anyio.fail_after(self._connect_timeout):
                await negotiate_auto(session)

        self._graded = None
        try:
            http = httpx2.AsyncClient(
                timeout=httpx2.Timeout(self._connect_timeout, read=None),
                event_hooks={"response": [note_refusal]},
                verify=_TLS,
                trust_env=False,
            )
            async with (
                http,
                streamable_http_client(self.url, http_client=http) as (read, write),
                ClientSession(read, write, message_handler=self.tool_list) as session,
            ):
                await stage(reasons.INITIALIZE_FAILED, lambda: negotiate(session))
                if session.protocol_version in MODERN_PROTOCOL_VERSIONS:
                    # The SDK's client mirrors a tool's `x-mcp-header` arguments into the
                    # `Mcp-Param-*` headers a 2026-07-28 server requires only for tools this
                    # session has listed, and the endpoint's tool definitions are cached, so a
                    # call may come before anything lists on a reopened session. Best effort:
                    # the probe that follows an opening lists (and grades a failure) anyway; half
                    # the connect timeout keeps `open` within its bound.
                    with suppress_failures():
                        await list_tool_defs(session, self._connect_timeout / 2)
                self._session = session
                self._ready.set()
                await self._stop.wait()
        except Exception as exc:
            raise_if_cancelling()
            self._failure = _short(exc)
            self._graded = grade(exc, self._connect_timeout)
            if self.refused is not None:
                self._graded = (reasons.UNAUTHENTICATED, refusal_detail(self.refused))
        finally:
            self._session = None
            self._ready.set()

    def relay(self, session: ClientSession, envelope: Mapping[str, Any]) -> HttpRelay | None:
        """The relay for a 2026-07-28 client's call, when `session` (this server's) negotiated
        that same revision; else None (the call goes through the SDK's session)."""
        version = envelope_version(envelope)
        if version is None or version not in MODERN_PROTOCOL_VERSIONS:
            return None
        if session.protocol_version != version:
            return None
        if self._relay is None:
            self._relay = HttpRelay(self.url, connect_timeout=self._connect_timeout)
        return self._relay

    async def close(self) -> None:
        self._closed = True
        if self._relay is not None:
            relay, self._relay = self._relay, None
            await relay.close()
        self._stop.set()
        await cancel_and_wait(self._task)
        self._task = None
