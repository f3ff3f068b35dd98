"""A client's hang-up reaches the upstream MCP server, on a real agent process with real mcp-kit
containers (TOOL_SET=slow: a tool `wait` that prints to stderr whether its wait was cancelled).

A client starts `wait(30)` through the endpoint and closes its connection after 1 s, on the
2026-07-28 hot path and on a handshake-era session's, to a stdio server (the agent's SDK session
over the container's attach sends `notifications/cancelled`) and to an HTTP server (the relay's
connection is closed; the SDK's 2026-07-28 entry cancels its handler on that). The server then
logs the cancel for that call, the journal records it `cancelled`, and the next call answers.
A session's DELETE while `wait` runs does the same, and so does a `notifications/cancelled` in
the handshake era (that era's own way to cancel, the official SDK client's: it keeps its
connection open), on the hot path and on the SDK's whole way (a call with a progress token,
which reaches an HTTP server through the agent's SDK session rather than the relay).

The journal's entry is written when the endpoint's handler for the call has ended, so it also
shows that no handler is left running for a cut call."""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.agent_process import AgentProcess, running_agent
from tests.conftest import build_images, in_thread
from tests.engine_fixture import kit_server, new_toolbox_id
from tests.mcp_stream import ACCEPT_BOTH, HANDSHAKE_VERSION, INITIALIZE, INITIALIZED

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

MODERN = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
}
SERVERS = ("stdio", "http")  # the servers' names in the toolbox: `stdio__wait`, `http__wait`
# httpx2 loads the CA store for each client it makes unless given a context: that would block
# the event loop for a few tenths of a second on a loaded host. Made once, at import.
_TLS = ssl.create_default_context()
HEARD_WITHIN = 20.0  # seconds for a cancel to reach the server (well under one when idle)


@dataclass(frozen=True)
class Slow:
    agent: AgentProcess
    toolbox: str
    containers: dict[str, Any]  # by server name

    @property
    def url(self) -> str:
        return f"{self.agent.base_url}/v1/toolboxes/{self.toolbox}/mcp"

    def stderr(self, server: str) -> str:
        return str(self.containers[server].logs(stdout=False, stderr=True).decode())

    def journal_end(self) -> int:
        cursor = 0
        while page := self.journal_since(cursor):
            cursor = page[-1]["cursor"]
        return cursor

    def journal_since(self, cursor: int) -> list[dict[str, Any]]:
        status, page = self.agent.get(
            f"/v1/toolboxes/{self.toolbox}/calls?since={cursor}&limit=1000", self.agent.token
        )
        assert status == 200, page
        return list(page["items"])


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Slow]:
    build_images("mcp-kit")
    with running_agent(tmp_path_factory.mktemp("cancel") / "state", docker_client) as agent:
        tb = new_toolbox_id()
        body = {
            "servers": [
                kit_server("stdio", "stdio", "slow"),
                kit_server("http", "streamable-http", "slow"),
            ],
            "rollout": {"min_healthy_time": "1s", "healthy_deadline": "90s"},
        }
        final = agent.put_toolbox(tb, json.dumps(body), 150)
        assert final["phase"] == "healthy", final
        containers = {
            s["name"]: docker_client.containers.get(s["container_id"]) for s in final["servers"]
        }
        assert sorted(containers) == sorted(SERVERS)
        listed = _list_tools(agent, tb)
        assert {"stdio__wait", "http__wait"} <= listed, listed
        yield Slow(agent, tb, containers)


def _list_tools(agent: AgentProcess, tb: str) -> set[str]:
    """tools/list once: the endpoint then knows the tools' schemas, and so relays a 2026-07-28
    call to the HTTP server (adapters/mcp_relay.py) rather than through its SDK session."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": META}}
    headers = {"MCP-Protocol-Version": MODERN, "Mcp-Method": "tools/list", "Accept": ACCEPT_BOTH}
    status, _, reply = agent.request(
        "POST", f"/v1/toolboxes/{tb}/mcp", token=agent.token, body=body, headers=headers
    )
    assert status == 200, reply
    return {t["name"] for t in reply["result"]["tools"]}


def http_client(headers: dict[str, str]) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(60), headers=headers, verify=_TLS, trust_env=False
    )


def _auth(slow: Slow) -> dict[str, str]:
    return {"Authorization": f"Bearer {slow.agent.token}", "Accept": ACCEPT_BOTH}


def modern_call(rid: int, name: str, arguments: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """(headers, body) of a plain 2026-07-28 tools/call: the hot path takes it."""
    headers = {
        "Content-Type": "application/json",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": name,
    }
    params = {"name": name, "arguments": arguments, "_meta": META}
    return headers, {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}


def handshake_call(
    session_id: str, rid: int, name: str, arguments: dict[str, Any]
) -> tuple[dict[str, Any], Any]:
    """(headers, body) of a tools/call in an open handshake-era session."""
    headers = {
        "Content-Type": "application/json",
        "Mcp-Session-Id": session_id,
        "MCP-Protocol-Version": HANDSHAKE_VERSION,
    }
    params = {"name": name, "arguments": arguments}
    return headers, {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}


async def open_session(slow: Slow) -> str:
    """A handshake-era session, initialized and known to the hot path; its id.

    The SDK answers `notifications/initialized` (202) before its server has run it, and the
    hot path takes a session's requests only once it has (gateway/handshake.py); until then
    they go the SDK's way, answered on an SSE stream. So a `tools/list` is sent until one is
    answered as the hot path answers (one JSON body): the calls that follow then take it."""
    async with http_client(_auth(slow)) as http:
        answer = await http.post(slow.url, json=INITIALIZE)
        assert answer.status_code == 200, answer.text
        session_id = answer.headers["mcp-session-id"]
        headers = {"Mcp-Session-Id": session_id, "MCP-Protocol-Version": HANDSHAKE_VERSION}
        answer = await http.post(slow.url, json=INITIALIZED, headers=headers)
        assert answer.status_code == 202, answer.text
        listing = {"jsonrpc": "2.0", "id": "l", "method": "tools/list"}
        for _ in range(50):
            answer = await http.post(slow.url, json=listing, headers=headers)
            assert answer.status_code == 200, answer.text
            if answer.headers["content-type"].startswith("application/json"):
                return str(session_id)
            await asyncio.sleep(0.1)
    raise AssertionError(f"the hot path never took session {session_id}'s requests")


async def call_and_hang_up(slow: Slow, headers: dict[str, Any], body: Any, after: float) -> None:
    """POST the call on a connection of its own, check that no answer has come `after` seconds
    later, and close the connection: the client has hung up."""
    data = json.dumps(body).encode()
    head = [
        f"POST /v1/toolboxes/{slow.toolbox}/mcp HTTP/1.1",
        f"Host: 127.0.0.1:{slow.agent.port}",
        *(f"{k}: {v}" for k, v in {**_auth(slow), **headers}.items()),
        f"Content-Length: {len(data)}",
        "",
        "",
    ]
    reader, writer = await asyncio.open_connection("127.0.0.1", slow.agent.port)
    try:
        writer.write("\r\n".join(head).encode() + data)
        await writer.drain()
        try:
            early = await asyncio.wait_for(reader.read(1), after)
        except TimeoutError:
            pass  # still waiting, as it should be
        else:
            pytest.fail(f"answered before the hang-up: {early!r}")
    finally:
        writer.close()
        await writer.wait_closed()


async def until(check: Callable[[], Any], within: float) -> Any:
    """Poll a blocking `check` (in a thread) until it returns something true, or fail."""
    deadline = time.monotonic() + within
    while True:
        found = await in_thread(check)
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


def wait_lines(slow: Slow, server: str, label: str) -> list[str]:
    """What the server logged about the `wait` call with this label."""
    return [
        line
        for line in slow.stderr(server).splitlines()
        if line.startswith("mcp-kit: wait ") and line.endswith(f", label {label})")
    ]


async def answers_normally(slow: Slow, server: str, era: str, session_id: str) -> None:
    """A quick `wait` on a new connection is answered (in the same session, for the handshake
    era): the hang-up left the endpoint, the session and the server's session working."""
    label = secrets.token_hex(4)
    arguments = {"seconds": 0.1, "label": label}
    if era == MODERN:
        headers, body = modern_call(2, f"{server}__wait", arguments)
    else:
        headers, body = handshake_call(session_id, 2, f"{server}__wait", arguments)
    async with http_client(_auth(slow)) as http:
        answer = await http.post(slow.url, json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    assert reply["id"] == 2, reply
    assert [c["text"] for c in reply["result"]["content"]] == ["waited 0.1s"], reply
    lines = await in_thread(wait_lines, slow, server, label)
    assert len(lines) == 1, lines
    assert lines[0].startswith("mcp-kit: wait done (request "), lines


@pytest.mark.parametrize("era", [MODERN, HANDSHAKE_VERSION])
@pytest.mark.parametrize("server", SERVERS)
async def test_a_client_that_hangs_up_cancels_the_call_at_the_server(
    slow: Slow, server: str, era: str
) -> None:
    session_id = await open_session(slow) if era == HANDSHAKE_VERSION else ""
    cursor = await in_thread(slow.journal_end)
    label = secrets.token_hex(4)
    arguments = {"seconds": 30, "label": label}
    if era == MODERN:
        headers, body = modern_call(1, f"{server}__wait", arguments)
    else:
        headers, body = handshake_call(session_id, 1, f"{server}__wait", arguments)
    hung_up = time.monotonic()
    await call_and_hang_up(slow, headers, body, after=1.0)

    lines = await until(lambda: wait_lines(slow, server, label), HEARD_WITHIN)
    assert len(lines) == 1, f"the server did not hear of the hang-up: {slow.stderr(server)}"
    assert lines[0].startswith("mcp-kit: wait cancelled (request "), lines
    assert time.monotonic() - hung_up < 30  # not the wait's own end

    calls = await until(lambda: slow.journal_since(cursor), HEARD_WITHIN)
    assert [(c["server"], c["tool"], c["outcome"]) for c in calls] == [
        (server, "wait", "cancelled")
    ]
    assert 0.9 < calls[0]["duration"] < HEARD_WITHIN, calls

    await answers_normally(slow, server, era, session_id)
    assert await in_thread(wait_lines, slow, server, label) == lines  # it never ended


@pytest.mark.parametrize("server", SERVERS)
async def test_a_session_deleted_while_its_call_runs_cancels_the_call_at_the_server(
    slow: Slow, server: str
) -> None:
    session_id = await open_session(slow)
    cursor = await in_thread(slow.journal_end)
    label = secrets.token_hex(4)
    headers, body = handshake_call(
        session_id, 1, f"{server}__wait", {"seconds": 30, "label": label}
    )
    async with http_client(_auth(slow)) as http:
        call = asyncio.create_task(http.post(slow.url, json=body, headers=headers))
        done, _ = await asyncio.wait({call}, timeout=1.0)
        assert not done, call.result().text
        ended = await http.delete(slow.url, headers={"Mcp-Session-Id": session_id})
        assert ended.status_code == 200, ended.text
        answer = await asyncio.wait_for(call, HEARD_WITHIN)
    assert answer.status_code == 500, answer.text  # as the SDK answers such a request
    assert answer.json()["error"] == {
        "code": -32603,
        "message": "Session terminated before the request completed",
    }

    lines = await until(lambda: wait_lines(slow, server, label), HEARD_WITHIN)
    assert len(lines) == 1, f"the server did not hear of the session's end: {slow.stderr(server)}"
    assert lines[0].startswith("mcp-kit: wait cancelled (request "), lines
    calls = await until(lambda: slow.journal_since(cursor), HEARD_WITHIN)
    assert [(c["server"], c["tool"], c["outcome"]) for c in calls] == [
        (server, "wait", "cancelled")
    ]
    await answers_normally(slow, server, MODERN, "")


@pytest.mark.parametrize("server", SERVERS)
async def test_the_sdk_clients_handshake_era_cancel_reaches_the_server(
    slow: Slow, server: str
) -> None:
    """The official SDK client in the handshake era cancels a call with `notifications/cancelled`
    and keeps its connection (a disconnect is no cancel in that era)."""
    label = secrets.token_hex(4)
    http = http_client({"Authorization": f"Bearer {slow.agent.token}"})
    cursor = await in_thread(slow.journal_end)
    async with (
        http,
        Client(streamable_http_client(slow.url, http_client=http), mode="legacy") as client,  # type: ignore[arg-type]
    ):
        call = asyncio.create_task(
            client.call_tool(f"{server}__wait", {"seconds": 30, "label": label})
        )
        done, _ = await asyncio.wait({call}, timeout=1.0)
        assert not done, call.result()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

        lines = await until(lambda: wait_lines(slow, server, label), HEARD_WITHIN)
        assert len(lines) == 1, f"the server did not hear of the cancel: {slow.stderr(server)}"
        assert lines[0].startswith("mcp-kit: wait cancelled (request "), lines
        calls = await until(lambda: slow.journal_since(cursor), HEARD_WITHIN)
        assert [(c["server"], c["tool"], c["outcome"]) for c in calls] == [
            (server, "wait", "cancelled")
        ]
        again = await client.call_tool(f"{server}__wait", {"seconds": 0.1})
        assert [getattr(c, "text", None) for c in again.content] == ["waited 0.1s"]


@pytest.mark.parametrize("server", SERVERS)
async def test_a_cancel_on_the_sdks_own_way_reaches_the_server(slow: Slow, server: str) -> None:
    """A handshake-era call with a progress token goes the SDK's whole way (its SSE stream can
    carry progress), and through the agent's SDK session to an HTTP server too (never the
    relay); the client's `notifications/cancelled` reaches the server from there as well."""
    session_id = await open_session(slow)
    cursor = await in_thread(slow.journal_end)
    label = secrets.token_hex(4)
    headers, body = handshake_call(
        session_id, 5, f"{server}__wait", {"seconds": 30, "label": label}
    )
    body["params"]["_meta"] = {"progressToken": "p-1"}
    cancel = {
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": 5, "reason": "the user gave up"},
    }
    async with http_client(_auth(slow)) as http:
        call = asyncio.create_task(http.post(slow.url, json=body, headers=headers))
        done, _ = await asyncio.wait({call}, timeout=1.0)
        assert not done, call.result().text
        sent = await http.post(slow.url, json=cancel, headers=headers)
        assert sent.status_code == 202, sent.text
        answer = await asyncio.wait_for(call, HEARD_WITHIN)
    assert answer.status_code == 200, answer.text
    assert '"code":-32800' in answer.text.replace(" ", ""), answer.text  # the SDK's answer

    lines = await until(lambda: wait_lines(slow, server, label), HEARD_WITHIN)
    assert len(lines) == 1, f"the server did not hear of the cancel: {slow.stderr(server)}"
    assert lines[0].startswith("mcp-kit: wait cancelled (request "), lines
    calls = await until(lambda: slow.journal_since(cursor), HEARD_WITHIN)
    assert [(c["server"], c["tool"], c["outcome"]) for c in calls] == [
        (server, "wait", "cancelled")
    ]
