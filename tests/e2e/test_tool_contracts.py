"""rollout.tool_contract on a real agent process with real containers: a compatible change
passes quietly, a removed tool is reported (warn), and a breaking schema change under `strict`
fails the gate and is rolled back while the old revision keeps serving through the endpoint."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.agent_process import AgentProcess, running_agent
from tests.conftest import build_images, in_thread
from tests.engine_fixture import new_toolbox_id

# A handshake-era session's GET stream is quiet up to 15 s between the SDK's pings: a read
# timeout under that (httpx's default is 5 s) drops the stream, and the notifications on it.
SSE_TIMEOUT = httpx2.Timeout(30, read=300)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

MCP_KIT = "dtma-examples/mcp-kit:latest"


@pytest.fixture(scope="module")
def kit_image(docker_client: Any) -> str:
    build_images("mcp-kit")
    return MCP_KIT


def kit_server(name: str, tool_set: str = "v1", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": MCP_KIT,
        "transport": "streamable-http",
        "port": 8000,
        "path": "/mcp",
        "env": {"TOOL_SET": tool_set},
        "health": {"interval": "1s", "timeout": "3s"},
        **extra,
    }


def kit_spec(
    *servers: dict[str, Any], tool_contract: str = "warn", order: str = "start_first"
) -> str:
    return json.dumps(
        {
            "servers": list(servers),
            "rollout": {
                "order": order,
                "min_healthy_time": "1s",
                "healthy_deadline": "90s",
                "tool_contract": tool_contract,
            },
        }
    )


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, kit_image: str, docker_client: Any
) -> Iterator[AgentProcess]:
    with running_agent(tmp_path_factory.mktemp("contracts") / "state", docker_client) as a:
        yield a


def apply(agent: AgentProcess, tb: str, body: str, wait: int = 150) -> dict[str, Any]:
    return agent.put_toolbox(tb, body, wait)


def events_all(agent: AgentProcess, tb: str) -> list[dict[str, Any]]:
    status, page = agent.get(f"/v1/events?toolbox={tb}&since=0", token=agent.token)
    assert status == 200, page
    return list(page["items"])


def events(agent: AgentProcess, tb: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in events_all(agent, tb) if e["kind"] == kind]


def test_compatible_change_passes_quietly_and_a_removed_tool_is_reported(
    agent: AgentProcess,
) -> None:
    tb = new_toolbox_id()
    first = apply(agent, tb, kit_spec(kit_server("kit")))
    assert first["phase"] == "healthy", first
    added = apply(agent, tb, kit_spec(kit_server("kit", "added")))
    assert added["operation"]["state"] == "succeeded", added
    assert added["stable_revision"] == 2
    assert events(agent, tb, "tool_contract_broken") == []

    removed = apply(agent, tb, kit_spec(kit_server("kit", "removed")))
    # warn: the rollout goes through, and says what it broke.
    assert removed["operation"]["state"] == "succeeded", removed
    assert removed["stable_revision"] == 3
    broken = events(agent, tb, "tool_contract_broken")
    assert {(e["server"], e["reason"], e["revision"]) for e in broken} == {
        ("kit", "tool_removed", 3)
    }
    messages = sorted(e["message"] for e in broken)
    assert messages == [
        "server kit: tool add: tool removed (revision 2 -> 3)",
        "server kit: tool shout: tool removed (revision 2 -> 3)",
    ]
    # Each passed revision's contract is recorded: names and input schemas, hashed.
    with sqlite3.connect(f"file:{agent.state_dir / 'state.db'}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT revision, server, hash, contract FROM tool_contracts WHERE toolbox = ? "
            "ORDER BY revision",
            (tb,),
        ).fetchall()
    assert [(r[0], r[1], sorted(json.loads(r[3]))) for r in rows] == [
        (1, "kit", ["add", "echo"]),
        (2, "kit", ["add", "echo", "shout"]),
        (3, "kit", ["echo"]),
    ]
    assert len({r[2] for r in rows}) == 3


async def test_strict_rolls_back_a_breaking_schema_change_and_the_old_revision_serves(
    agent: AgentProcess,
) -> None:
    tb = new_toolbox_id()
    first = await in_thread(apply, agent, tb, kit_spec(kit_server("kit"), tool_contract="strict"))
    assert first["phase"] == "healthy", first
    old_container = first["servers"][0]["container_id"]

    breaking = kit_spec(kit_server("kit", "required"), tool_contract="strict")
    final = await in_thread(apply, agent, tb, breaking)
    assert final["operation"]["state"] == "rolled_back", final
    assert "tool_contract" in final["operation"]["error"], final
    assert final["stable_revision"] == 1, final
    assert [(s["revision"], s["container_id"]) for s in final["servers"]] == [(1, old_container)]

    (broken,) = await in_thread(events, agent, tb, "tool_contract_broken")
    assert broken["reason"] == "required_added"
    assert broken["message"] == (
        "server kit: tool echo: required added at properties.lang (revision 1 -> 2)"
    )
    failed = await in_thread(events, agent, tb, "rollout_failed")
    assert [(e["revision"], e["reason"]) for e in failed] == [(2, "tool_contract")]
    _, errors = await in_thread(agent.get, "/v1/errors", agent.token)
    mine = [e for e in errors["items"] if e["toolbox"] == tb]
    assert [e["category"] for e in mine] == ["config"], mine

    # The old revision keeps serving its tools, with the old contract, through the endpoint.
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {agent.token}"}, timeout=SSE_TIMEOUT
    )
    url = f"{agent.base_url}/v1/toolboxes/{tb}/mcp"
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"kit__echo", "kit__add"}
        assert tools["kit__echo"].input_schema["required"] == ["text"]
        result = await client.call_tool("kit__echo", {"text": "hi", "times": 2})
        assert [c.text for c in result.content] == ["hi hi"]  # type: ignore[union-attr]


async def test_strict_with_stop_first_starts_the_old_revision_again(agent: AgentProcess) -> None:
    tb = new_toolbox_id()
    body = kit_spec(kit_server("kit"), tool_contract="strict", order="stop_first")
    first = await in_thread(apply, agent, tb, body)
    assert first["phase"] == "healthy", first
    old_container = first["servers"][0]["container_id"]

    breaking = kit_spec(kit_server("kit", "removed"), tool_contract="strict", order="stop_first")
    final = await in_thread(apply, agent, tb, breaking)
    assert final["operation"]["state"] == "rolled_back", final
    assert final["stable_revision"] == 1, final
    assert final["phase"] == "healthy", final
    assert [(s["revision"], s["container_id"]) for s in final["servers"]] == [(1, old_container)]
    kinds = [e["kind"] for e in await in_thread(events_all, agent, tb)]
    tail = kinds[kinds.index("tool_contract_broken") :]
    assert tail[:2] == ["tool_contract_broken", "rollout_failed"], tail
    assert "rollback_passed" in tail, tail

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {agent.token}"}, timeout=SSE_TIMEOUT
    )
    url = f"{agent.base_url}/v1/toolboxes/{tb}/mcp"
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        assert {t.name for t in (await client.list_tools()).tools} == {"kit__echo", "kit__add"}
