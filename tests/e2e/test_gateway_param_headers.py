"""A tool whose input schema mirrors an argument into an `Mcp-Param-*` header, through the
toolbox endpoint on a real agent process, to real mcp-kit containers (TOOL_SET=headers:
`locate(region, city?)`, `region` marked `x-mcp-header: Region`), with the official SDK client
in both protocol eras.

On 2026-07-28 HTTP the SDK's client mirrors `region` into `Mcp-Param-Region`, and the SDK's
server (the endpoint, and mcp-kit behind it) refuses a call whose header is missing or
disagrees. So the endpoint must (gateway/exchange.py, gateway/endpoint.py):
- list the tool with its mark, so that its own clients send the header;
- refuse a call whose header disagrees, with the SDK's error, before any server sees it;
- never relay such a call to an HTTP server as the bytes it came as (the header would be
  lost), but send it through the agent's SDK session, which mirrors the header itself.

mcp-kit prints each `locate` with the client name and the `Mcp-Param-Region` it came with, and
each `echo` with the client name: a 2026-07-28 call relayed as is carries the test client's
name to the server, a call through the agent's SDK session the agent's. Only the endpoint's hot
paths relay, so the name is the sign of which way a call went."""

from __future__ import annotations

import asyncio
import json
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.inbound import encode_header_value
from mcp_types import Implementation
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from tests.agent_process import AgentProcess, running_agent
from tests.conftest import build_images, in_thread
from tests.engine_fixture import kit_server, new_toolbox_id
from tests.mcp_stream import ACCEPT_BOTH

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

MODERN = "2026-07-28"
CLIENT = "paramhdr-e2e"  # the test clients' name, as the servers see it when relayed as is
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": CLIENT, "version": "1"},
}
SERVERS = ("stdio", "http")  # the servers' names in the toolbox: `stdio__locate`, ...
ERAS = ("auto", "legacy")  # the SDK client's modes: 2026-07-28, and the handshake era
HEADER_MISMATCH = -32020  # the SDK's JSON-RPC code for a header that disagrees with the body
# httpx2 loads the CA store for each client it makes unless given a context (it would block the
# event loop for a few tenths of a second on a loaded host). Made once, at import.
_TLS = ssl.create_default_context()
HEARD_WITHIN = 20.0  # seconds for a server's stderr line to show in its container's log


@dataclass(frozen=True)
class Kit:
    agent: AgentProcess
    toolbox: str
    containers: dict[str, Any]  # by server name

    @property
    def url(self) -> str:
        return f"{self.agent.base_url}/v1/toolboxes/{self.toolbox}/mcp"

    def lines(self, server: str, prefix: str) -> list[str]:
        """The server's stderr lines that start with `mcp-kit: <prefix>`."""
        err = self.containers[server].logs(stdout=False, stderr=True).decode()
        return [x for x in err.splitlines() if x.startswith(f"mcp-kit: {prefix}")]

    async def heard(self, server: str, prefix: str, count: int = 1) -> list[str]:
        """Wait until the server has printed `count` lines starting with `mcp-kit: <prefix>`."""
        deadline = time.monotonic() + HEARD_WITHIN
        while True:
            found = await in_thread(self.lines, server, prefix)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.2)


def apply_kit(agent: AgentProcess, docker_client: Any, *transports: str) -> Kit:
    """A toolbox of mcp-kit servers named after their transports, rolled out and healthy."""
    tb = new_toolbox_id()
    body = {
        "servers": [kit_server(t, t, "headers") for t in transports],
        "rollout": {"min_healthy_time": "1s", "healthy_deadline": "90s"},
    }
    final = agent.put_toolbox(tb, json.dumps(body), 150)
    assert final["phase"] == "healthy", final
    containers = {
        s["name"]: docker_client.containers.get(s["container_id"]) for s in final["servers"]
    }
    assert sorted(containers) == sorted(transports)
    return Kit(agent, tb, containers)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[AgentProcess]:
    build_images("mcp-kit")
    with running_agent(tmp_path_factory.mktemp("paramhdr") / "state", docker_client) as a:
        yield a


@pytest.fixture(scope="module")
def kit(agent: AgentProcess, docker_client: Any) -> Kit:
    return apply_kit(agent, docker_client, *SERVERS)


@asynccontextmanager
async def sdk_client(kit: Kit, mode: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {kit.agent.token}"},
        timeout=httpx2.Timeout(60),
        verify=_TLS,
        trust_env=False,
    )
    info = Implementation(name=CLIENT, version="1")
    async with (
        http,
        Client(
            streamable_http_client(kit.url, http_client=http), mode=mode, client_info=info
        ) as client,
    ):  # type: ignore[arg-type]
        modern = client.session.protocol_version in MODERN_PROTOCOL_VERSIONS
        assert modern == (mode == "auto"), client.session.protocol_version
        yield client


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def region() -> str:
    """A region no other call names, so that a server's log line is this call's."""
    return f"r{secrets.token_hex(4)}"


async def raw_post(
    kit: Kit, method: str, params: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """One 2026-07-28 request POSTed as a client of that revision sends it (routing headers
    agreeing with the body), plus `headers`; (HTTP status, JSON body)."""
    name = params.get("name")
    sent = {
        "Authorization": f"Bearer {kit.agent.token}",
        "Accept": ACCEPT_BOTH,
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": method,
        **({"Mcp-Name": name} if isinstance(name, str) else {}),
        **(headers or {}),
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**params, "_meta": META}}
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(60), verify=_TLS, trust_env=False) as h:
        answer = await h.post(kit.url, json=body, headers=sent)
    assert answer.headers["content-type"].startswith("application/json"), answer.text
    return answer.status_code, answer.json()


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("mode", ERAS)
async def test_the_tool_is_listed_with_its_mark_and_answers_through_the_endpoint(
    kit: Kit, mode: str, server: str
) -> None:
    where = region()
    async with sdk_client(kit, mode) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        marked = tools[f"{server}__locate"].input_schema["properties"]["region"]
        assert marked["x-mcp-header"] == "Region", tools[f"{server}__locate"]
        assert "x-mcp-header" not in json.dumps(tools[f"{server}__echo"].input_schema)
        answer = await client.call_tool(f"{server}__locate", {"region": where, "city": "Graz"})
        assert not answer.is_error, answer
        assert text_of(answer) == f"Graz in {where}"
    heard = await kit.heard(server, f"locate {where} ")
    assert len(heard) == 1, heard
    # The agent's SDK session called it (never the client's request relayed as is), and on HTTP
    # mirrored the header the server checks; stdio has no headers.
    assert f" from {CLIENT} " not in heard[0], heard
    mirrored = where if server == "http" else "-"
    assert heard[0].endswith(f"(Mcp-Param-Region: {mirrored})"), heard


@pytest.mark.parametrize("mode", ERAS)
async def test_a_value_that_is_no_header_token_reaches_the_http_server_encoded(
    kit: Kit, mode: str
) -> None:
    """A value a header cannot carry as is goes base64-wrapped (the SDK's sentinel), and the
    server decodes it to the argument."""
    where = f"Südtirol {secrets.token_hex(4)}"
    async with sdk_client(kit, mode) as client:
        await client.list_tools()
        answer = await client.call_tool("http__locate", {"region": where})
        assert text_of(answer) == f"somewhere in {where}", answer
    heard = await kit.heard("http", f"locate {where} ")
    assert len(heard) == 1, heard
    assert heard[0].endswith(f"(Mcp-Param-Region: {encode_header_value(where)})"), heard
    assert "=?base64?" in heard[0], heard


@pytest.mark.parametrize("mode", ERAS)
async def test_a_headerless_tool_is_still_relayed_as_is_to_the_http_server(
    kit: Kit, mode: str
) -> None:
    """The sign of the hot path: only its calls are relayed, with the client's own name. (A
    stdio server has no relay, so there is no such sign for it.)"""
    async with sdk_client(kit, mode) as client:
        await client.list_tools()
        before = len(await in_thread(kit.lines, "http", f"echo from {CLIENT}"))
        answer = await client.call_tool("http__echo", {"text": "hi", "times": 2})
        assert text_of(answer) == "hi hi", answer
    heard = await kit.heard("http", f"echo from {CLIENT}", before + 1)
    assert len(heard) == before + 1, heard


async def _refused(kit: Kit, server: str, where: str, header: str | None) -> dict[str, Any]:
    """A 2026-07-28 call of locate whose `Mcp-Param-Region` is `header` (None: absent) for the
    argument `where`: it must be refused as the SDK refuses it. Its error."""
    extra = {"Mcp-Param-Region": header} if header is not None else {}
    status, answer = await raw_post(
        kit, "tools/call", {"name": f"{server}__locate", "arguments": {"region": where}}, extra
    )
    assert status == 400, answer
    error = answer["error"]
    assert error["code"] == HEADER_MISMATCH, answer
    assert error["message"].startswith("Mcp-Param-Region header "), answer
    assert answer["id"] == 1, answer
    return dict(error)


async def _no_call_reached(kit: Kit, server: str, where: str) -> None:
    """The same call with the right header answers, and it is the only one the server saw."""
    status, answer = await raw_post(
        kit,
        "tools/call",
        {"name": f"{server}__locate", "arguments": {"region": where}},
        {"Mcp-Param-Region": where},
    )
    assert status == 200, answer
    assert answer["result"]["content"][0]["text"] == f"somewhere in {where}", answer
    heard = await kit.heard(server, f"locate {where} ")
    assert len(heard) == 1, heard


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("header", ["Elsewhere", None], ids=["disagrees", "missing"])
async def test_a_call_whose_header_disagrees_is_refused_the_sdks_way(
    kit: Kit, server: str, header: str | None
) -> None:
    status, listed = await raw_post(kit, "tools/list", {})
    assert status == 200, listed
    where = region()
    error = await _refused(kit, server, where, header)
    assert ("does not match" if header else "is missing") in error["message"], error
    await _no_call_reached(kit, server, where)


@pytest.mark.parametrize("header", ["Elsewhere", None], ids=["disagrees", "missing"])
async def test_a_fresh_endpoints_first_call_has_its_header_checked(
    agent: AgentProcess, docker_client: Any, header: str | None
) -> None:
    """No client has listed the tools yet (the endpoint is made by this request): the header
    is checked all the same. (It was not: the endpoint's schema lookup knew no tool before a
    listing, and the SDK skips the check for a tool whose schema it is not given.)"""
    fresh = await in_thread(apply_kit, agent, docker_client, "http")
    where = region()
    await _refused(fresh, "http", where, header)
    await _no_call_reached(fresh, "http", where)
