"""Prompts and resources through the toolbox MCP endpoint, on a real agent process with real
containers and the official SDK's client: the same mcp-kit server over HTTP and over stdio (so
the same resource URIs twice, kept apart by the `dtma://<server>/` prefix), a toolbox whose
servers offer neither (then neither is among the endpoint's capabilities), and a new revision
announced to handshake sessions as changed prompt and resource lists."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from tests.agent_process import AgentProcess, running_agent
from tests.conftest import build_images, in_thread
from tests.engine_fixture import new_toolbox_id

# A handshake-era session's GET stream is quiet up to 15 s between the SDK's pings: a read
# timeout under that (httpx's default is 5 s) drops the stream, and the notifications on it.
SSE_TIMEOUT = httpx2.Timeout(30, read=300)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MCP_KIT = "dtma-examples/mcp-kit:latest"
GATEWAY_DOC = Path(__file__).resolve().parents[2] / "docs/gateway.md"


def kit(name: str, transport: str, **env: str) -> dict[str, Any]:
    server: dict[str, Any] = {
        "name": name,
        "image": MCP_KIT,
        "transport": transport,
        "health": {"interval": "1s", "timeout": "3s"},
        "env": env,
    }
    if transport == "stdio":
        server["env"]["MCP_TRANSPORT"] = "stdio"
    else:
        server |= {"port": 8000, "path": "/mcp"}
    return server


def spec(*servers: dict[str, Any]) -> str:
    rollout = {"min_healthy_time": "1s", "healthy_deadline": "90s"}
    return json.dumps({"servers": list(servers), "rollout": rollout})


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: Any,
) -> Iterator[AgentProcess]:
    build_images("mcp-kit")
    with running_agent(tmp_path_factory.mktemp("catalog") / "state", docker_client) as a:
        yield a


def apply(agent: AgentProcess, body: str) -> str:
    tb = new_toolbox_id()
    resp = agent.put_toolbox(tb, body, wait=150)
    assert resp["phase"] == "healthy", resp
    return tb


@pytest.fixture(scope="module")
def kits(agent: AgentProcess) -> str:
    return apply(agent, spec(kit("web", "streamable-http"), kit("pipe", "stdio")))


@asynccontextmanager
async def mcp_client(agent: AgentProcess, tb: str, mode: str = "auto") -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {agent.token}"}, timeout=SSE_TIMEOUT
    )
    url = f"{agent.base_url}/v1/toolboxes/{tb}/mcp"
    async with http, Client(streamable_http_client(url, http_client=http), mode=mode) as client:  # type: ignore[arg-type]
        yield client


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_prompts_and_resources_of_both_transports_are_listed_and_fetched(
    agent: AgentProcess, kits: str, mode: str
) -> None:
    async with mcp_client(agent, kits, mode) as client:
        modern = client.session.protocol_version in MODERN_PROTOCOL_VERSIONS
        assert modern == (mode == "auto")
        caps = client.server_capabilities
        assert caps.prompts is not None
        assert caps.resources is not None

        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
        assert set(prompts) == {"web__greeting", "pipe__greeting"}
        assert [a.name for a in prompts["pipe__greeting"].arguments or []] == ["name"]
        for name in prompts:
            got = await client.get_prompt(name, {"name": "Ada"})
            (message,) = got.messages
            assert message.content.text == "Write a one-line greeting for Ada."  # type: ignore[union-attr]

        resources = (await client.list_resources()).resources
        assert sorted(r.uri for r in resources) == [
            "dtma://pipe/kit://readme",
            "dtma://web/kit://readme",
        ]
        templates = (await client.list_resource_templates()).resource_templates
        assert sorted(t.uri_template for t in templates) == [
            "dtma://pipe/kit://items/{item}",
            "dtma://web/kit://items/{item}",
        ]
        readme = await client.read_resource("dtma://web/kit://readme")
        (content,) = readme.contents
        assert content.uri == "dtma://web/kit://readme"
        assert "mcp-kit" in content.text  # type: ignore[union-attr]
        item = await client.read_resource("dtma://pipe/kit://items/abc")
        assert [(c.uri, c.text) for c in item.contents] == [  # type: ignore[union-attr]
            ("dtma://pipe/kit://items/abc", "item abc")
        ]

        for bad_uri in ("kit://readme", "dtma://nobody/kit://readme"):
            with pytest.raises(MCPError) as err:
                await client.read_resource(bad_uri)
            assert err.value.code == -32602, bad_uri
        with pytest.raises(MCPError) as err:
            await client.get_prompt("greeting", {"name": "x"})
        assert err.value.code == -32602
        with pytest.raises(MCPError) as err:  # the server's own error, passed on
            await client.get_prompt("web__no_such_prompt", {})
        assert err.value.code != -32003


async def test_a_toolbox_without_prompts_or_resources_does_not_offer_them(
    agent: AgentProcess,
) -> None:
    only_tools = [kit("web", "streamable-http", OFFER="tools"), kit("pipe", "stdio", OFFER="tools")]
    tb = await in_thread(apply, agent, spec(*only_tools))
    for mode in ("auto", "legacy"):
        async with mcp_client(agent, tb, mode) as client:
            caps = client.server_capabilities
            assert caps.tools is not None
            assert caps.prompts is None, mode
            assert caps.resources is None, mode
            assert (await client.list_tools()).tools


async def test_a_new_revision_announces_changed_prompts_and_resources(
    agent: AgentProcess,
) -> None:
    tb = await in_thread(apply, agent, spec(kit("web", "streamable-http")))
    seen: list[str] = []

    async def on_message(message: Any) -> None:
        seen.append(str(getattr(message, "method", type(message).__name__)))

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {agent.token}"}, timeout=SSE_TIMEOUT
    )
    url = f"{agent.base_url}/v1/toolboxes/{tb}/mcp"
    transport = streamable_http_client(url, http_client=http)
    async with http, Client(transport, mode="legacy", message_handler=on_message) as client:  # type: ignore[arg-type]
        caps = client.server_capabilities
        assert caps.prompts is not None
        assert caps.prompts.list_changed
        assert caps.resources is not None
        assert caps.resources.list_changed
        assert (await client.list_prompts()).prompts
        assert not [m for m in seen if m.endswith("list_changed")]
        changed = spec(kit("web", "streamable-http", REVISION="2"))
        resp = await in_thread(agent.put_toolbox, tb, changed, 150)
        assert resp["phase"] == "healthy", resp
        wanted = {"notifications/prompts/list_changed", "notifications/resources/list_changed"}
        # The endpoint looks every second, and on a loaded machine its look (which asks the
        # servers what they offer, bounded at 2 s) can take a few: 15 s is ample.
        for _ in range(150):
            if wanted <= set(seen):
                break
            await asyncio.sleep(0.1)
        assert wanted <= set(seen), seen
        assert {p.name for p in (await client.list_prompts()).prompts} == {"web__greeting"}


async def test_the_docs_snippet_gets_a_prompt_and_reads_a_resource(
    agent: AgentProcess, kits: str
) -> None:
    doc = await in_thread(GATEWAY_DOC.read_text)
    snippet = re.findall(r"```python\n(.*?)```", doc, re.S)[1]
    assert "read_resource" in snippet
    env = {**os.environ, "DTMA_URL": agent.base_url, "TOOLBOX": kits, "DTMA_TOKEN": agent.token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", snippet, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert out.decode().splitlines() == [
        "Write a one-line greeting for Ada.",
        "['dtma://pipe/kit://readme', 'dtma://web/kit://readme']",
        "mcp-kit: tools, prompts and resources for dtma's tests",
    ]
