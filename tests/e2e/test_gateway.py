"""The toolbox MCP endpoint on a real agent process, with real containers and the official SDK's
client: aggregation of a stdio and an HTTP server, both protocol eras, the allow-list, many
concurrent clients on one stdio session, and calls through rollouts, a rollback and a crash."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
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
from tests.conftest import in_thread
from tests.engine_fixture import new_toolbox_id, notes_server, time_server
from tests.engine_fixture import spec as base_spec

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SERVER_UNAVAILABLE = -32003


def spec(*servers: dict[str, Any], **extra: Any) -> str:
    """A spec with a deadline generous enough for a loaded shared machine."""
    return base_spec(*servers, deadline="90s", **extra)


GATEWAY_DOC = Path(__file__).resolve().parents[2] / "docs/gateway.md"


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, images: dict[str, str], docker_client: Any
) -> Iterator[AgentProcess]:
    with running_agent(tmp_path_factory.mktemp("gw") / "state", docker_client) as a:
        yield a


def apply(agent: AgentProcess, tb: str, body: str, wait: int = 120) -> dict[str, Any]:
    return agent.put_toolbox(tb, body, wait)


@asynccontextmanager
async def mcp_client(
    agent: AgentProcess, tb: str, mode: str = "auto", on_message: Any = None
) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {agent.token}"}, timeout=httpx2.Timeout(30)
    )
    url = f"{agent.base_url}/v1/toolboxes/{tb}/mcp"
    async with (
        http,
        Client(
            streamable_http_client(url, http_client=http), mode=mode, message_handler=on_message
        ) as client,
    ):  # type: ignore[arg-type]
        yield client


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


@pytest.fixture(scope="module")
def mixed(agent: AgentProcess) -> str:
    tb = new_toolbox_id()
    final = apply(agent, tb, spec(time_server("time"), notes_server("notes")))
    assert final["phase"] == "healthy", final
    return tb


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_one_endpoint_lists_and_calls_a_stdio_and_an_http_server(
    agent: AgentProcess, mixed: str, mode: str
) -> None:
    async with mcp_client(agent, mixed, mode) as client:
        modern = client.session.protocol_version in MODERN_PROTOCOL_VERSIONS
        assert modern == (mode == "auto"), client.session.protocol_version
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert {"time__get_current_time", "time__convert_time", "notes__add_note"} <= set(tools)
        assert not [n for n in tools if "__" not in n]
        # Schemas pass through unchanged.
        assert tools["time__get_current_time"].input_schema["required"] == ["timezone"]
        assert set(tools["notes__add_note"].input_schema["properties"]) == {"title", "body"}

        now = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert not now.is_error
        assert '"timezone": "UTC"' in text_of(now)
        title = f"from-{mode}"
        added = await client.call_tool("notes__add_note", {"title": title, "body": "x"})
        assert not added.is_error, added
        listed = await client.call_tool("notes__list_notes", {})
        assert title in json.dumps(listed.model_dump(mode="json"))

        with pytest.raises(MCPError) as unknown:
            await client.call_tool("time__no_such_tool", {})
        assert unknown.value.code == -32602


async def test_endpoint_needs_the_token_and_a_known_toolbox(agent: AgentProcess) -> None:
    status, _, _ = await in_thread(agent.request, "POST", "/v1/toolboxes/nope/mcp", raw=b"{}")
    assert status == 401
    status, _, body = await in_thread(
        agent.request, "POST", "/v1/toolboxes/t-missing/mcp", token=agent.token, raw=b"{}"
    )
    assert status == 404, body


async def test_allow_list_hides_and_refuses_a_tool(agent: AgentProcess) -> None:
    tb = new_toolbox_id()
    gateway = {"tools": {"allow": ["time__*"], "deny": ["time__convert_time"]}}
    final = await in_thread(apply, agent, tb, spec(time_server("time"), gateway=gateway))
    assert final["phase"] == "healthy", final
    async with mcp_client(agent, tb) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert names == ["time__get_current_time"]
        with pytest.raises(MCPError) as refused:
            await client.call_tool(
                "time__convert_time",
                {"source_timezone": "UTC", "time": "12:00", "target_timezone": "UTC"},
            )
        assert refused.value.code == -32602
        ok = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert not ok.is_error


CLIENTS = 50
CALLS_PER_CLIENT = 5


async def test_concurrent_clients_get_their_own_answers(agent: AgentProcess, mixed: str) -> None:
    """50 SDK clients, each with its own session, call the one stdio server at once; every
    request asks a different time, so an answer routed to the wrong request shows."""

    async def one_client(i: int, start: asyncio.Barrier) -> list[tuple[str, str]]:
        seen = []
        async with mcp_client(agent, mixed) as client:
            await start.wait()  # every client connected: the calls overlap
            for j in range(CALLS_PER_CLIENT):
                k = i * CALLS_PER_CLIENT + j
                hhmm = f"{k // 60:02d}:{k % 60:02d}"
                result = await client.call_tool(
                    "time__convert_time",
                    {"source_timezone": "UTC", "time": hhmm, "target_timezone": "UTC"},
                )
                assert not result.is_error, result
                source = json.loads(text_of(result))["source"]["datetime"]
                seen.append((hhmm, source[11:16]))
        return seen

    async def all_clients() -> list[list[tuple[str, str]]]:
        start = asyncio.Barrier(CLIENTS)
        return await asyncio.gather(*(one_client(i, start) for i in range(CLIENTS)))

    # The clients are load, not code under test (the agent is another process): they run on a
    # loop of their own, in a thread, so that 50 SDK clients on a busy 2-core machine do not
    # trip this test loop's blocked-callback check (asyncio debug mode times wall clock).
    answers = await in_thread(asyncio.run, all_clients())
    pairs = [p for client in answers for p in client]
    assert len(pairs) == CLIENTS * CALLS_PER_CLIENT
    assert len({asked for asked, _ in pairs}) == len(pairs)  # no two requests alike
    assert all(asked == got for asked, got in pairs), [p for p in pairs if p[0] != p[1]]


class Caller:
    """Calls a tool every 50 ms until stopped; records every failure."""

    def __init__(self, client: Client, tool: str, args: dict[str, Any]) -> None:
        self.client, self.tool, self.args = client, tool, args
        self.ok = 0
        self.failures: list[str] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(10):
                    result = await self.client.call_tool(self.tool, self.args)
                if result.is_error:
                    self.failures.append(text_of(result))
                else:
                    self.ok += 1
            except Exception as exc:  # every failure counts
                self.failures.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()


async def _calls_through(
    agent: AgentProcess, tb: str, new_spec: str, mode: str = "auto"
) -> tuple[dict[str, Any], list[Caller]]:
    async with mcp_client(agent, tb, mode) as client:
        callers = [
            Caller(client, "time__get_current_time", {"timezone": "UTC"}),
            Caller(client, "notes__list_notes", {}),
        ]
        tasks = [asyncio.create_task(c.run()) for c in callers]
        await asyncio.sleep(0.5)
        final = await in_thread(apply, agent, tb, new_spec)
        await asyncio.sleep(1.5)  # and calls keep working on what serves now
        for c in callers:
            c.stop()
        await asyncio.gather(*tasks)
    return final, callers


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # each era: the handshake's on its hot path
async def test_no_failed_call_through_a_start_first_rollout(agent: AgentProcess, mode: str) -> None:
    tb = new_toolbox_id()
    await in_thread(apply, agent, tb, spec(time_server("time"), notes_server("notes")))
    new = spec(time_server("time", env={"REV": "2"}), notes_server("notes", env={"REV": "2"}))
    final, callers = await _calls_through(agent, tb, new, mode)
    assert final["revision"] == 2, final
    assert final["phase"] == "healthy", final
    for c in callers:
        assert c.failures == [], (c.tool, c.ok, c.failures[:3])
        assert c.ok > 20, (c.tool, c.ok)
    _status, body = await in_thread(agent.get, f"/v1/toolboxes/{tb}", agent.token)
    assert {s["revision"] for s in body["servers"]} == {2}


async def test_no_failed_call_through_a_bad_revision_rolled_back(agent: AgentProcess) -> None:
    tb = new_toolbox_id()
    await in_thread(apply, agent, tb, spec(time_server("time"), notes_server("notes")))
    bad = spec(time_server("time", env={"REV": "2"}), notes_server("notes", "exit_at_start"))
    final, callers = await _calls_through(agent, tb, bad)
    assert final["stable_revision"] == 1, final
    assert {s["revision"] for s in final["servers"]} == {1}, final
    for c in callers:
        assert c.failures == [], (c.tool, c.ok, c.failures[:3])
        assert c.ok > 10, (c.tool, c.ok)


async def test_crashed_stdio_server_gives_a_retryable_error_not_a_hang(
    agent: AgentProcess, docker_client: Any
) -> None:
    tb = new_toolbox_id()
    restart = {"delay": "3s", "max_delay": "3s"}
    await in_thread(apply, agent, tb, spec(time_server("time"), restart=restart))
    _status, body = await in_thread(agent.get, f"/v1/toolboxes/{tb}", agent.token)
    container_id = body["servers"][0]["container_id"]
    async with mcp_client(agent, tb) as client:
        assert not (await client.call_tool("time__get_current_time", {"timezone": "UTC"})).is_error
        await in_thread(lambda: docker_client.containers.get(container_id).kill())
        refusals: list[MCPError] = []
        recovered = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not recovered:
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(10):
                    result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
                recovered = not result.is_error and bool(refusals)
            except MCPError as exc:
                refusals.append(exc)
            assert time.monotonic() - t0 < 6, "a call hung on a crashed server"
            await asyncio.sleep(0.1)
        assert refusals, "no call saw the restart window"
        assert {e.code for e in refusals} == {SERVER_UNAVAILABLE}, refusals
        assert all(e.error.data == {"retryable": True, "retryAfterMs": 500} for e in refusals)
        assert recovered, "calls did not work again after the restart"


async def test_the_docs_snippet_connects_lists_and_calls(agent: AgentProcess, mixed: str) -> None:
    doc = await in_thread(GATEWAY_DOC.read_text)
    snippet = re.findall(r"```python\n(.*?)```", doc, re.S)[0]
    env = {**os.environ, "DTMA_URL": agent.base_url, "TOOLBOX": mixed, "DTMA_TOKEN": agent.token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", snippet, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    names, text = out.decode().split("\n", 1)
    assert "'notes__add_note'" in names
    assert "'time__get_current_time'" in names
    assert json.loads(text)["timezone"] == "UTC"


async def test_a_changed_tool_set_is_announced_to_handshake_sessions(agent: AgentProcess) -> None:
    tb = new_toolbox_id()
    await in_thread(apply, agent, tb, spec(time_server("time")))
    seen: list[str] = []

    async def on_message(message: Any) -> None:
        seen.append(str(getattr(message, "method", type(message).__name__)))

    async with mcp_client(agent, tb, "legacy", on_message) as client:
        assert len((await client.list_tools()).tools) == 2
        hidden = {"tools": {"deny": ["time__convert_time"]}}
        await in_thread(apply, agent, tb, spec(time_server("time"), gateway=hidden))
        for _ in range(50):
            if "notifications/tools/list_changed" in seen:
                break
            await asyncio.sleep(0.1)
        assert "notifications/tools/list_changed" in seen, seen
        assert [t.name for t in (await client.list_tools()).tools] == ["time__get_current_time"]


@pytest.fixture
def own_agent(tmp_path: Path, docker_client: Any, images: dict[str, str]) -> Iterator[AgentProcess]:
    with running_agent(tmp_path / "state", docker_client) as a:
        yield a


async def test_the_agent_stops_promptly_with_an_mcp_session_open(own_agent: AgentProcess) -> None:
    tb = new_toolbox_id()
    await in_thread(apply, own_agent, tb, spec(time_server("time")))
    async with mcp_client(own_agent, tb, "legacy") as client:
        await client.list_tools()  # a session with its GET stream open
        t0 = time.monotonic()
        code = await in_thread(own_agent.stop)
        assert time.monotonic() - t0 < 10
        assert code == 0, own_agent.logs()[-3000:]
