"""MCP protocol probes over the real transports, built on the official `mcp` SDK.

A probe negotiates the protocol era as the SDK's own client does in mode='auto' (the stateless
2026-07-28 `server/discover` first, the `initialize` handshake when the server does not speak it),
then runs `tools/list`, and returns a ProbeResult; it never raises because the server is
unhealthy (only cancellation propagates). A server that answers HTTP 401/403 is graded
`unauthenticated`, not unreachable. For stdio, `StdioProbeSession` holds one session per
container: it negotiates only when asked (a fresh container), never on a live session, and its
liveness check is `ping` on a handshake-era session and `tools/list` on a modern one (2026-07-28
has no ping).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any

import anyio
from mcp.client.session import ClientSession
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from dtma import __version__
from dtma.adapters.docker_attach import (
    LivenessPinger,
    attached_stdio_transport,
    open_attach_socket,
)
from dtma.adapters.mcp_grading import describe, grade, ms_since, stage
from dtma.adapters.mcp_upstream import HttpUpstream, ToolListWatch
from dtma.cancellation import raise_if_cancelling
from dtma.domain import probe as reasons
from dtma.domain.probe import ProbeResult, check_expected_tools
from dtma.sdk_compat.client import negotiate_auto  # the SDK client's own mode='auto' policy

CLIENT_INFO = {"name": "dtma-probe", "version": __version__}


def _client_info() -> Any:
    from mcp import types

    return types.Implementation(**CLIENT_INFO)


async def _list_tool_names(session: ClientSession) -> list[str]:
    names: list[str] = []
    cursor: str | None = None
    from mcp import types

    while True:
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        result = await session.list_tools(params=params)
        names.extend(t.name for t in result.tools)
        cursor = result.next_cursor
        if not cursor:
            return names


def is_modern(session: ClientSession) -> bool:
    """A 2026-07-28 (stateless, no ping) session rather than a handshake-era one."""
    return session.protocol_version in MODERN_PROTOCOL_VERSIONS


async def probe_http(url: str, *, timeout: float, expect_tools: Sequence[str] = ()) -> ProbeResult:
    """One fresh session, as the gateway holds one (HttpUpstream), probed (`probe_upstream`),
    then closed. A server's probes use the session the gateway holds (engine/probes.py); this
    one is for a probe of its own."""
    upstream = HttpUpstream(url, connect_timeout=timeout)
    try:
        return await probe_upstream(upstream, timeout=timeout, expect_tools=expect_tools)
    finally:
        await upstream.close()


async def probe_upstream(
    upstream: HttpUpstream, *, timeout: float, expect_tools: Sequence[str] = ()
) -> ProbeResult:
    """Open `upstream`'s session unless it is held (a failed opening graded), then tools/list
    on it; a 401/403 on it is `unauthenticated`. The session is left as it is: the caller keeps
    or drops it."""
    t0 = time.perf_counter()
    failed = await upstream.open()
    session = upstream.held()
    if failed is not None or session is None:
        return failed or ProbeResult.failed(reasons.SESSION_CLOSED, ms_since(t0), "closed")
    result = await probe_session(session, timeout=timeout, expect_tools=expect_tools)
    return replace(upstream.refusal(result), latency_ms=ms_since(t0))


async def probe_session(
    session: ClientSession, *, timeout: float, expect_tools: Sequence[str] = ()
) -> ProbeResult:
    """tools/list (and the expect_tools check) on a session already open and negotiated: the
    one the gateway holds for an HTTP server, so that a steady probe opens no session of its
    own. Never raises because the server is unhealthy."""
    t0 = time.perf_counter()
    try:
        with anyio.fail_after(timeout):
            tools = await _list_tool_names(session)
    except TimeoutError:
        return ProbeResult.failed(reasons.TIMEOUT, ms_since(t0), f"no answer within {timeout}s")
    except Exception as exc:
        raise_if_cancelling()
        return ProbeResult.failed(reasons.TOOLS_LIST_FAILED, ms_since(t0), describe(exc))
    return check_expected_tools(tools, expect_tools, ms_since(t0))


async def _negotiate(session: ClientSession, timeout: float) -> None:
    with anyio.fail_after(timeout):
        await negotiate_auto(session)


def _close_late_socket(work: asyncio.Future[socket.socket]) -> None:
    if not work.cancelled() and work.exception() is None:
        work.result().close()


class StdioProbeSession:
    """Holds one MCP session with a stdio container through an attach socket.

    Concurrency: `run()` is the owner task (it enters and exits the transport and session, as
    anyio requires); `probe()` may be called from any task while `run()` is live. Not reusable
    after `close()`. Idempotent close.
    """

    def __init__(
        self,
        docker_client: Callable[[], Any],
        container_id: str,
        attach_pool: Executor | None = None,
    ) -> None:
        """`attach_pool` runs the blocking attach (docker_engine.py's pool sized for it); None
        means asyncio's default executor."""
        self._docker_client = docker_client
        self._attach_pool = attach_pool
        self.container_id = container_id
        self._session: ClientSession | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._failure: str | None = None
        self.initialized = False
        self.modern = False  # the negotiated era is 2026-07-28 (stateless; no ping)
        self._pinger = LivenessPinger()
        self.tool_list = ToolListWatch()

    async def run(self, *, initialize: bool, timeout: float) -> None:
        """Attach, optionally negotiate the era (`server/discover`, or the `initialize` handshake
        with a server that predates it), then hold the session until close() or a failure.

        Without negotiation the session talks handshake-era JSON-RPC, which is what a live
        handshake-era server expects after a re-attach; a 2026-07-28 server needs the (stateless)
        negotiation again."""
        try:
            sock = await self._attach()
            async with (
                attached_stdio_transport(sock, on_end=self.close, pinger=self._pinger) as (
                    read,
                    write,
                ),
                ClientSession(
                    read, write, client_info=_client_info(), message_handler=self.tool_list
                ) as session,
            ):
                if initialize:
                    await stage(reasons.INITIALIZE_FAILED, lambda: _negotiate(session, timeout))
                    self.initialized = True
                    self.modern = is_modern(session)
                self._session = session
                self._ready.set()
                await self._stop.wait()
        except Exception as exc:
            raise_if_cancelling()
            # The step that failed, also when anyio's task groups wrapped it on the way out.
            reason, detail = grade(exc, timeout)
            self._failure = f"{reason}: {detail}"
        finally:
            self._session = None
            self._ready.set()

    async def _attach(self) -> socket.socket:
        """Open the attach socket in the attach pool. Cancelled while the thread still works,
        the socket it opens is closed when it arrives, never left to the garbage collector."""
        work = asyncio.get_running_loop().run_in_executor(
            self._attach_pool,
            lambda: open_attach_socket(self._docker_client(), self.container_id),
        )
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            work.add_done_callback(_close_late_socket)
            raise

    async def wait_ready(self) -> str | None:
        """Wait until the session is usable; return the failure text, or None when ready."""
        await self._ready.wait()
        return self._failure if self._session is None else None

    async def probe(
        self, *, timeout: float, expect_tools: Sequence[str] = (), list_tools: bool = True
    ) -> ProbeResult:
        """tools/list (and the expect_tools check), or, when list_tools is False, a liveness
        ping beside the session (docker_attach.LivenessPinger). Alive: a result, or on a
        2026-07-28 session (which has no ping) an error answer; a handshake-era server that
        refuses the ping (say, one never initialized) is not."""
        t0 = time.perf_counter()
        failure = await self.wait_ready()
        session = self._session
        if failure is not None or session is None:
            return ProbeResult.failed(reasons.SESSION_CLOSED, ms_since(t0), failure or "closed")
        try:
            with anyio.fail_after(timeout):
                if not list_tools:
                    refused = await self._pinger.ping()
                    if refused is not None and not is_modern(session):
                        return ProbeResult.failed(reasons.PING_FAILED, ms_since(t0), refused)
                    return ProbeResult.ok(ms_since(t0))
                tools = await _list_tool_names(session)
        except TimeoutError:
            return ProbeResult.failed(reasons.TIMEOUT, ms_since(t0), f"no answer within {timeout}s")
        except Exception as exc:
            raise_if_cancelling()
            reason = reasons.TOOLS_LIST_FAILED if list_tools else reasons.PING_FAILED
            return ProbeResult.failed(reason, ms_since(t0), describe(exc))
        return check_expected_tools(tools, expect_tools, ms_since(t0))

    def client(self) -> ClientSession | None:
        """The live session for the gateway's calls (shared with the probes), or None while it is
        not open. Never opens or negotiates: that stays the probe's job."""
        return self._session

    def close(self) -> None:
        self._stop.set()
