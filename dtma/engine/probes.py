"""One probe handle per live container, over the server's real transport.

stdio: holds a StdioProbeSession (attach). A fresh container is initialized once; an adopted one
(after an agent restart) is not, unless it does not answer, in which case it gets one initialize.
A session that ends (the attach or the first initialize failed, say on a loaded host) is opened
again on the next probe. It negotiates again if it never did, or if the server speaks 2026-07-28
(discovery is stateless there); a live handshake-era session is never initialized twice.
streamable-http: the probes run on the session the gateway calls through (HttpUpstream, held
open): N probes open no N sessions, and a healthy server costs one session. While none is held
(the gate's first probes, or after the held session broke) a probe opens it, and a failed
opening is graded (timeout, refused credentials, handshake, connection) and dropped; so a server
counts as healthy only once the endpoint can call it.
health.mcp = false: healthy while the container runs (the runner tracks that).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from dtma import lazy_import
from dtma.cancellation import cancel_and_wait
from dtma.domain import probe as reasons
from dtma.domain.containers import ObservedContainer
from dtma.domain.probe import ProbeResult
from dtma.errors import ServerUnavailable
from dtma.spec.models import ServerSpec

# Probe failures on the held HTTP session that keep it: the server's answer on a working session,
# or a slow one (a timeout on a loaded host must not cut the gateway's calls in flight on it).
# Any other failure drops it, and the next probe grades a fresh session.
_SESSION_KEPT = frozenset({reasons.MISSING_TOOLS, reasons.TOOL_NAME_COLLISION, reasons.TIMEOUT})

if TYPE_CHECKING:
    from dtma.adapters.mcp_probe import StdioProbeSession
    from dtma.adapters.mcp_upstream import HttpUpstream

# The MCP SDK's client side (adapters/mcp_probe.py, adapters/mcp_upstream.py) is imported by the
# first probe or gateway call, in a thread (dtma/lazy_import.py): an agent with no toolbox never
# loads it. Every async entry point awaits `lazy_import.load(MCP_CLIENT)` first; the sync ones
# only run after one of those.


class ContainerProbe:
    """Not thread-safe; used by one ServerRunner. close() is idempotent."""

    def __init__(
        self,
        docker_client: Callable[[], Any],
        server: ServerSpec,
        container: ObservedContainer,
        *,
        fresh: bool,
        attach_pool: Executor | None = None,
    ) -> None:
        self._docker_client = docker_client
        self._attach_pool = attach_pool
        self._server = server
        self._container = container
        self._fresh = fresh
        self._stdio: StdioProbeSession | None = None
        self._stdio_task: asyncio.Task[None] | None = None
        self._reinitialized = False
        self._initialized_once = False
        self._modern = False
        self._http: HttpUpstream | None = None

    @property
    def endpoint(self) -> str | None:
        if self._server.transport != "streamable-http" or not self._container.ip:
            return None
        return f"http://{self._container.ip}:{self._server.port}{self._server.http_path}"

    async def check(self, *, full: bool) -> ProbeResult:
        """full: initialize/tools-list and the expect_tools check; else a cheap liveness call."""
        health = self._server.health
        if not health.mcp:
            return ProbeResult.ok(0.0)
        await lazy_import.load(lazy_import.MCP_CLIENT)
        if self._server.transport == "streamable-http":
            return await self._check_http(full)
        return await self._check_stdio(full)

    async def _check_http(self, full: bool) -> ProbeResult:
        from dtma.adapters.mcp_probe import probe_upstream  # loaded by check()
        from dtma.adapters.mcp_upstream import HttpUpstream

        health = self._server.health
        url = self.endpoint
        if url is None:
            return ProbeResult.failed(reasons.CONNECT_FAILED, 0.0, "container has no address")
        if self._http is None:
            self._http = HttpUpstream(url, connect_timeout=health.timeout)
        # This upstream only: a gateway call may replace self._http meanwhile (_upstream), and
        # the probe must not close that newer one.
        http = self._http
        expect = health.expect_tools if full else ()
        result = await probe_upstream(http, timeout=health.timeout, expect_tools=expect)
        if not result.healthy and (http.held() is None or result.reason not in _SESSION_KEPT):
            await self._drop_http(http)  # the next probe grades a fresh opening
        return result

    async def _check_stdio(self, full: bool) -> ProbeResult:
        health = self._server.health
        if self._stdio_task is not None and self._stdio_task.done():
            # The previous session ended; its failure was reported by the last probe.
            if self._stdio is not None:
                self._initialized_once |= self._stdio.initialized
                self._modern |= self._stdio.modern
            await self.close()
        if self._stdio is None:
            self._open_stdio(
                # Never twice on a live handshake-era session; again after a negotiation that
                # did not finish (fresh, or the one an adopted server was owed); always on a
                # 2026-07-28 one (stateless).
                initialize=(not self._initialized_once and (self._fresh or self._reinitialized))
                or self._modern
            )
        assert self._stdio is not None
        result = await self._stdio.probe(
            timeout=health.timeout, expect_tools=health.expect_tools, list_tools=full
        )
        if (
            not result.healthy
            and not self._fresh
            and not self._reinitialized
            and result.reason in (reasons.TOOLS_LIST_FAILED, reasons.PING_FAILED)
        ):
            # An adopted server that was never initialized (the agent died before it could), or
            # one that speaks 2026-07-28 (no ping, and every request carries the negotiated
            # envelope): give it the one negotiation it is owed.
            self._reinitialized = True
            await self.close()
            self._open_stdio(initialize=True)
            result = await self._stdio.probe(
                timeout=health.timeout, expect_tools=health.expect_tools, list_tools=True
            )
        return result

    # -- the gateway's calls (raise ServerUnavailable when the session is not usable) ---------

    async def _client(self) -> Any:
        await lazy_import.load(lazy_import.MCP_CLIENT)
        from dtma.adapters.mcp_upstream import HttpUpstream

        if self._server.transport == "streamable-http":
            url = self.endpoint
            if url is None:
                raise ServerUnavailable("the container has no address")
            if self._http is None:
                self._http = HttpUpstream(url, connect_timeout=self._server.health.timeout)
            return await self._http.session()
        session = self._stdio.client() if self._stdio is not None else None
        if session is None:
            raise ServerUnavailable("the server's stdio session is not open (starting)")
        return session

    def tool_list_changes(self) -> int:
        http = self._http.tool_list.changes if self._http is not None else 0
        stdio = self._stdio.tool_list.changes if self._stdio is not None else 0
        return http + stdio

    async def tool_defs(self, timeout: float) -> list[dict[str, Any]]:
        """The server's tools as their wire JSON."""

        async def listing(session: Any) -> list[dict[str, Any]]:
            from dtma.adapters import mcp_upstream  # loaded by _client()

            return await mcp_upstream.list_tool_defs(session, timeout)

        defs: list[dict[str, Any]] = await self._upstream(listing)
        return defs

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        timeout: float,
        envelope: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """tools/call on the held session; a 2026-07-28 client's call (`envelope`) to an HTTP
        server that negotiated the same revision is relayed as is (adapters/mcp_relay.py)."""

        async def call(session: Any) -> dict[str, Any]:
            from dtma.adapters import mcp_upstream  # loaded by _client()

            http = self._http
            relay = http.relay(session, envelope) if http and envelope is not None else None
            if relay is not None:
                return await relay.call_tool(name, arguments, envelope or {}, timeout)
            return await mcp_upstream.call_tool(session, name, arguments, timeout)

        result: dict[str, Any] = await self._upstream(call)
        return result

    async def offers(self) -> frozenset[str] | None:
        """`prompts` / `resources`, as the server's capabilities say; None when unknown."""

        async def read(session: Any) -> frozenset[str] | None:
            from dtma.adapters import mcp_upstream  # loaded by _client()

            return mcp_upstream.offered(session)

        found: frozenset[str] | None = await self._upstream(read)
        return found

    async def catalog_request(
        self, method: str, params: dict[str, Any] | None, timeout: float
    ) -> dict[str, Any]:
        """One prompts/resources request (mcp_upstream.CATALOG_METHODS) as wire JSON."""

        async def ask(session: Any) -> dict[str, Any]:
            from dtma.adapters import mcp_upstream  # loaded by _client()

            return await mcp_upstream.catalog_request(session, method, params, timeout)

        result: dict[str, Any] = await self._upstream(ask)
        return result

    async def _upstream(self, step: Callable[[Any], Any]) -> Any:
        http = self._http
        try:
            return await step(await self._client())
        except ServerUnavailable:
            # A broken HTTP session: open a fresh one next time (the one this call used, or
            # the one it made; not one made meanwhile by another).
            await self._drop_http(http or self._http)
            raise

    async def _drop_http(self, http: HttpUpstream | None) -> None:
        """Close `http`, and forget it if it is still the one held."""
        if http is None:
            return
        if self._http is http:
            self._http = None
        await http.close()

    def _open_stdio(self, *, initialize: bool) -> None:
        from dtma.adapters.mcp_probe import StdioProbeSession  # loaded by check()

        self._stdio = StdioProbeSession(self._docker_client, self._container.id, self._attach_pool)
        self._stdio_task = asyncio.create_task(
            self._stdio.run(initialize=initialize, timeout=self._server.health.timeout),
            name=f"stdio-session-{self._container.id[:12]}",
        )

    async def close(self) -> None:
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()
        if self._stdio is not None:
            # A probe opened after this one must not negotiate a live session again.
            self._initialized_once |= self._stdio.initialized
            self._modern |= self._stdio.modern
            self._stdio.close()
        await cancel_and_wait(self._stdio_task)
        self._stdio = None
        self._stdio_task = None
