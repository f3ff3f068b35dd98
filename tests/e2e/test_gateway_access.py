"""Client tokens and the tool-call journal of the toolbox MCP endpoint, on a real agent process
with real containers and the official SDK's client: a scoped token opens its own endpoint and
nothing else, revocation is immediate, values are stored and logged nowhere; every tools/call is
journalled (fields, cursor, bound) and counted in /metrics, and never with its arguments or
result."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from tests.agent_process import DTMA, AgentProcess, running_agent
from tests.conftest import in_thread
from tests.e2e.access_support import (
    all_calls,
    apply,
    cli,
    get_stream,
    issue,
    mcp_client,
    metric,
    revoke,
    run_doc_line,
    spec,
    state_bytes,
)
from tests.engine_fixture import new_toolbox_id, notes_server, time_server
from tests.mcp_stream import stream_ends, watching

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

RETAIN_CALLS = 100  # the smallest bound the agent accepts
GATEWAY_DOC = Path(__file__).resolve().parents[2] / "docs/gateway.md"


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, images: dict[str, str], docker_client: Any
) -> Iterator[AgentProcess]:
    state = tmp_path_factory.mktemp("access") / "state"
    with running_agent(
        state,
        docker_client,
        DTMA_RETAIN_CALLS=str(RETAIN_CALLS),
        DTMA_PRUNE_INTERVAL="1s",
    ) as a:
        yield a


@pytest.fixture(scope="module")
def toolbox(agent: AgentProcess) -> str:
    """time (stdio) and notes (HTTP); convert_time is denied by the gateway filter."""
    tb = new_toolbox_id()
    gateway = {"tools": {"deny": ["time__convert_time"]}}
    apply(agent, tb, spec(time_server("time"), notes_server("notes"), gateway=gateway))
    return tb


@pytest.fixture(scope="module")
def other(agent: AgentProcess) -> str:
    tb = new_toolbox_id()
    apply(agent, tb, spec(time_server("time")))
    return tb


async def test_a_scoped_token_opens_its_endpoint_and_nothing_else(
    agent: AgentProcess, toolbox: str, other: str
) -> None:
    created = await in_thread(issue, agent, toolbox, "ci")
    token = created["token"]
    assert token.startswith("dtma_tb_")
    assert re.fullmatch(r"tok-[0-9a-f]{16}", created["id"])
    assert (created["toolbox"], created["name"]) == (toolbox, "ci")

    async with mcp_client(agent, toolbox, token) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"time__get_current_time", "notes__add_note"} <= names
        assert not (await client.call_tool("time__get_current_time", {"timezone": "UTC"})).is_error

    for method, path in (
        ("GET", "/v1/toolboxes"),
        ("GET", f"/v1/toolboxes/{toolbox}"),
        ("GET", f"/v1/toolboxes/{toolbox}/tokens"),
        ("POST", f"/v1/toolboxes/{toolbox}/tokens"),
        ("GET", f"/v1/toolboxes/{toolbox}/calls"),
        ("DELETE", f"/v1/toolboxes/{toolbox}"),
        ("GET", "/v1/events"),
        ("POST", f"/v1/toolboxes/{other}/mcp"),  # another toolbox's endpoint
    ):
        status, _, body = await in_thread(agent.request, method, path, token=token, raw=b"{}")
        assert status == 403, (method, path, body)
        assert body["error"]["code"] == "forbidden"
        assert token not in json.dumps(body)

    # No token, or one the agent never issued: 401.
    for presented in (None, "dtma_tb_" + secrets.token_urlsafe(32)):
        status, headers, _ = await in_thread(
            agent.request, "POST", f"/v1/toolboxes/{toolbox}/mcp", token=presented, raw=b"{}"
        )
        assert status == 401
        assert "WWW-Authenticate" in headers

    # Listed without its value, with when it was last used.
    status, listing = await in_thread(agent.get, f"/v1/toolboxes/{toolbox}/tokens", agent.token)
    assert status == 200
    mine = [t for t in listing["items"] if t["id"] == created["id"]]
    assert len(mine) == 1
    assert mine[0]["last_used"] is not None
    assert set(mine[0]) == {"id", "toolbox", "name", "created_at", "last_used"}
    assert token not in json.dumps(listing)


async def test_revocation_refuses_an_open_session_at_its_next_request(
    agent: AgentProcess, toolbox: str
) -> None:
    created = await in_thread(issue, agent, toolbox)
    statuses: list[int] = []
    async with mcp_client(agent, toolbox, created["token"], statuses) as client:
        ok = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert not ok.is_error
        status, _ = await in_thread(revoke, agent, toolbox, created["id"])
        assert status == 204
        assert 401 not in statuses
        with pytest.raises(MCPError):
            async with asyncio.timeout(20):
                await client.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert statuses[-1] == 401, statuses
    status, _, _ = await in_thread(
        agent.request,
        "POST",
        f"/v1/toolboxes/{toolbox}/mcp",
        token=created["token"],
        raw=b"{}",
    )
    assert status == 401
    status, body = await in_thread(revoke, agent, toolbox, created["id"])
    assert status == 404, body
    status, body = await in_thread(revoke, agent, toolbox, "not-a-token")
    assert status == 422, body


async def test_revocation_closes_the_get_streams_the_token_holds(
    agent: AgentProcess, toolbox: str
) -> None:
    revoked = await in_thread(issue, agent, toolbox)
    kept = await in_thread(issue, agent, toolbox)
    async with (
        get_stream(agent, toolbox, revoked["token"]) as cut,
        get_stream(agent, toolbox, kept["token"]) as untouched,
        get_stream(agent, toolbox, agent.token) as operator,
        watching(untouched, operator) as (untouched_watch, operator_watch),
    ):
        status, _ = await in_thread(revoke, agent, toolbox, revoked["id"])
        assert status == 204
        assert await stream_ends(cut, within=10)
        assert not await untouched_watch.ends_within(1)
        assert not await operator_watch.ends_within(0.2)
    assert "mcp_streams_cut" in agent.logs()


async def test_token_values_are_stored_and_logged_nowhere(
    agent: AgentProcess, toolbox: str
) -> None:
    values = [(await in_thread(issue, agent, toolbox))["token"] for _ in range(3)]
    async with mcp_client(agent, toolbox, values[0]) as client:
        await client.list_tools()
    await in_thread(
        agent.request, "GET", f"/v1/toolboxes/{toolbox}", token=values[1]
    )  # a 403, logged or not
    await asyncio.sleep(1.5)  # past a flush of last_used and of the call journal
    everything = await in_thread(state_bytes, agent)
    for value in values:
        assert value.encode() not in everything
        assert value[len("dtma_tb_") :].encode() not in everything


async def test_tokens_and_metric_series_go_with_their_toolbox(agent: AgentProcess) -> None:
    tb = new_toolbox_id()
    await in_thread(apply, agent, tb, spec(time_server("time")))
    created = await in_thread(issue, agent, tb)
    async with mcp_client(agent, tb, created["token"]) as client:
        await client.call_tool("time__get_current_time", {"timezone": "UTC"})
    assert f'toolbox="{tb}"' in (await in_thread(agent.request, "GET", "/metrics"))[2]
    status, _, body = await in_thread(
        agent.request, "DELETE", f"/v1/toolboxes/{tb}?wait=60", token=agent.token, timeout=70
    )
    assert status == 200, body
    assert f'toolbox="{tb}"' not in (await in_thread(agent.request, "GET", "/metrics"))[2]
    await in_thread(apply, agent, tb, spec(time_server("time")))  # the same id again
    status, _, _ = await in_thread(
        agent.request, "POST", f"/v1/toolboxes/{tb}/mcp", token=created["token"], raw=b"{}"
    )
    assert status == 401
    assert (await in_thread(agent.get, f"/v1/toolboxes/{tb}/tokens", agent.token))[1] == {
        "items": []
    }
    status, _, body = await in_thread(
        agent.request, "POST", "/v1/toolboxes/t-none/tokens", token=agent.token, body={}
    )
    assert status == 404, body


async def test_the_cli_creates_lists_and_revokes_tokens(agent: AgentProcess, toolbox: str) -> None:
    made = await in_thread(cli, agent, "token", "create", toolbox, "--name", "laptop")
    assert made.returncode == 0, made.stderr
    value = made.stdout.strip()
    assert value.startswith("dtma_tb_")
    assert "\n" not in value
    token_id = re.search(r"token (tok-[0-9a-f]{16})", made.stderr)
    assert token_id is not None, made.stderr
    listed = await in_thread(cli, agent, "token", "ls", toolbox)
    assert listed.returncode == 0, listed.stderr
    assert token_id.group(1) in listed.stdout
    assert "laptop" in listed.stdout
    assert value not in listed.stdout + listed.stderr
    as_json = await in_thread(cli, agent, "token", "ls", toolbox, "--json")
    assert token_id.group(1) in {t["id"] for t in json.loads(as_json.stdout)["items"]}

    url = await in_thread(cli, agent, "mcp-url", toolbox)
    assert (url.returncode, url.stdout.strip()) == (
        0,
        f"{agent.base_url}/v1/toolboxes/{toolbox}/mcp",
    )
    async with mcp_client(agent, toolbox, value) as client:  # the URL and the value work
        assert (await client.list_tools()).tools

    gone = await in_thread(cli, agent, "token", "rm", toolbox, token_id.group(1))
    assert (gone.returncode, "revoked" in gone.stdout) == (0, True), gone.stderr
    again = await in_thread(cli, agent, "token", "rm", toolbox, token_id.group(1))
    assert (again.returncode, "has no token" in again.stderr) == (2, True), again.stderr
    for args in (("token", "create", "t-none"), ("mcp-url", "t-none"), ("calls", "t-none")):
        missing = await in_thread(cli, agent, *args)
        assert (missing.returncode, "404" in missing.stderr) == (2, True), (args, missing.stderr)
    bad = await in_thread(cli, agent, "token", "create", toolbox, "--name", "é")
    assert (bad.returncode, "body.name" in bad.stderr) == (2, True), bad.stderr
    calls = await in_thread(cli, agent, "calls", toolbox)
    assert (calls.returncode, "OUTCOME" in calls.stdout) == (0, True), calls.stderr


async def test_calls_are_journalled_and_counted_without_their_values(
    agent: AgentProcess, toolbox: str
) -> None:
    secret_value = "SECRET-" + secrets.token_hex(16)
    created = await in_thread(issue, agent, toolbox)
    status, _, before = await in_thread(agent.request, "GET", "/metrics")
    last = max([c["cursor"] for c in await in_thread(all_calls, agent, toolbox)], default=0)

    async with mcp_client(agent, toolbox, created["token"]) as client:
        note = await client.call_tool("notes__add_note", {"title": "t", "body": secret_value})
        assert not note.is_error
        note_id = json.loads(note.content[0].text)  # type: ignore[union-attr]
        got = await client.call_tool("notes__get_note", {"note_id": note_id})
        assert secret_value in json.dumps(got.model_dump(mode="json"))  # the tool returned it
        bad_zone = await client.call_tool("time__get_current_time", {"timezone": "Nowhere/None"})
        assert bad_zone.is_error
        for name in ("time__convert_time", "time__made_up_" + secrets.token_hex(4)):
            with pytest.raises(MCPError):
                await client.call_tool(name, {"x": secret_value})
    async with mcp_client(agent, toolbox, agent.token) as client:
        await client.call_tool("time__get_current_time", {"timezone": "UTC"})

    rows = [c for c in await in_thread(all_calls, agent, toolbox) if c["cursor"] > last]
    seen = [(c["server"], c["tool"], c["outcome"], c["token"]) for c in rows]
    tid = created["id"]
    assert seen[:4] == [
        ("notes", "add_note", "ok", tid),
        ("notes", "get_note", "ok", tid),
        ("time", "get_current_time", "error", tid),
        ("time", "convert_time", "denied", tid),
    ], seen
    assert seen[4][1].startswith("made_up_")
    assert seen[4][2:] == ("not_found", tid)
    assert seen[5] == ("time", "get_current_time", "ok", "agent")
    for row in rows:
        assert row["toolbox"] == toolbox
        assert row["duration"] >= 0
        assert row["ts"] > time.time() - 300
        assert row["request_bytes"] > 0
    assert rows[1]["response_bytes"] > len(secret_value)  # sizes are recorded, values are not

    status, _, after = await in_thread(agent.request, "GET", "/metrics")
    assert status == 200
    for labels, delta in (
        ({"server": "notes", "tool": "add_note", "outcome": "ok"}, 1),
        ({"server": "time", "tool": "get_current_time", "outcome": "ok"}, 1),
        ({"server": "time", "tool": "get_current_time", "outcome": "error"}, 1),
        ({"server": "time", "tool": "convert_time", "outcome": "denied"}, 0),  # not offered
        ({"server": "time", "tool": "other", "outcome": "denied"}, 1),
        ({"server": "time", "tool": "other", "outcome": "not_found"}, 1),
    ):
        got_delta = metric(after, "dtma_tool_calls_total", toolbox=toolbox, **labels) - metric(
            before, "dtma_tool_calls_total", toolbox=toolbox, **labels
        )
        assert got_delta == delta, (labels, got_delta)
    count = "dtma_tool_call_duration_seconds_count"
    assert (
        metric(after, count, toolbox=toolbox, server="time")
        - metric(before, count, toolbox=toolbox, server="time")
        == 4
    )
    assert "made_up_" not in after
    await asyncio.sleep(1.5)
    for text in (json.dumps(rows), after, (await in_thread(state_bytes, agent)).decode("latin-1")):
        assert secret_value not in text


async def test_the_cursor_pages_and_the_journal_is_bounded(
    agent: AgentProcess, toolbox: str
) -> None:
    async def calls(n: int) -> None:
        async with mcp_client(agent, toolbox, agent.token) as client:
            for _ in range(n):
                await client.call_tool("time__get_current_time", {"timezone": "UTC"})

    await asyncio.gather(*(calls(40) for _ in range(4)))  # 160 > RETAIN_CALLS
    pages: list[list[int]] = []
    since = 0
    while True:
        status, page = await in_thread(
            agent.get, f"/v1/toolboxes/{toolbox}/calls?since={since}&limit=30", agent.token
        )
        assert status == 200
        pages.append([c["cursor"] for c in page["items"]])
        if not page["items"]:
            assert page["next"] == since
            break
        assert page["next"] == pages[-1][-1]
        assert len(pages[-1]) <= 30
        since = page["next"]
    cursors = [c for p in pages for c in p]
    assert cursors == sorted(set(cursors))
    assert len(pages) >= 3

    def bounded() -> bool:
        left = all_calls(agent, toolbox)
        return 0 < len(left) <= RETAIN_CALLS and left[-1]["cursor"] == max(cursors)

    deadline = time.monotonic() + 30
    while not await in_thread(bounded):
        assert time.monotonic() < deadline, "the call journal was not pruned to its bound"
        await asyncio.sleep(0.5)


async def test_the_docs_token_commands_run_as_written(agent: AgentProcess, toolbox: str) -> None:
    doc = await in_thread(GATEWAY_DOC.read_text)
    section = doc.split("## Tokens", 1)[1].split("\n## ", 1)[0]
    lines = [
        ln.split("  #", 1)[0].strip()
        for ln in re.findall(r"```sh\n(.*?)```", section, re.S)[0].splitlines()
    ]
    assert [ln.split()[:3] for ln in lines] == [
        ["dtma", "token", "create"],
        ["dtma", "mcp-url", '"$TOOLBOX"'],
        ["dtma", "token", "ls"],
        ["dtma", "token", "rm"],
    ]
    env = {
        **os.environ,
        "PATH": f"{Path(DTMA).parent}:{os.environ['PATH']}",
        "DTMA_URL": agent.base_url,
        "DTMA_API_TOKEN": agent.token,
        "TOOLBOX": toolbox,
    }
    made = await in_thread(run_doc_line, lines[0], env)
    assert made.returncode == 0, made.stderr
    token_id = re.search(r"tok-[0-9a-f]{16}", made.stderr)
    assert token_id is not None, made.stderr
    env["TOKEN_ID"] = token_id.group(0)
    outputs = [await in_thread(run_doc_line, line, env) for line in lines[1:]]
    assert [o.returncode for o in outputs] == [0, 0, 0], [o.stderr for o in outputs]
    assert outputs[0].stdout.strip() == f"{agent.base_url}/v1/toolboxes/{toolbox}/mcp"
    assert token_id.group(0) in outputs[1].stdout
    status, _, _ = await in_thread(
        agent.request,
        "POST",
        f"/v1/toolboxes/{toolbox}/mcp",
        token=made.stdout.strip(),
        raw=b"{}",
    )
    assert status == 401  # revoked by the last line


async def test_a_call_to_a_stopped_server_is_journalled_unavailable(
    agent: AgentProcess, other: str
) -> None:
    """Last in this module: it stops the other toolbox's only server."""
    status, _, ref = await in_thread(
        agent.request,
        "POST",
        f"/v1/toolboxes/{other}/stop",
        token=agent.token,
        body={"servers": ["time"]},
    )
    assert status == 202, ref
    op = ref["operation"]
    deadline = time.monotonic() + 60
    while (await in_thread(agent.get, f"/v1/operations/{op}", agent.token))[1][
        "state"
    ] == "running":
        assert time.monotonic() < deadline, "stop did not finish"
        await asyncio.sleep(0.5)
    async with mcp_client(agent, other, agent.token) as client:
        with pytest.raises(MCPError) as refused:
            await client.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert refused.value.code == -32003
    rows = await in_thread(all_calls, agent, other)
    assert (rows[-1]["server"], rows[-1]["tool"], rows[-1]["outcome"]) == (
        "time",
        "get_current_time",
        "unavailable",
    )
