"""mcp-notes over streamable HTTP on an internal network, and each FAIL_MODE as named."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from dtma.adapters.mcp_probe import probe_http
from dtma.domain import probe as reasons
from tests.conftest import container_ip, in_thread, wait_until

pytestmark = pytest.mark.integration

NOTES_TOOLS = ["add_note", "list_notes", "get_note", "delete_note", "search_notes"]


@pytest.fixture
def run_notes(images: dict[str, str], make_container: Any, make_network: Any) -> Any:
    """Start mcp-notes with a FAIL_MODE on a fresh internal network; return (container, url)."""

    def start(fail_mode: str = "") -> tuple[Any, str]:
        net = make_network(internal=True)
        c = make_container(
            images["mcp-notes"],
            environment={"FAIL_MODE": fail_mode},
            network=net.name,
            read_only=True,
            tmpfs={"/tmp": "rw,size=16m"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
        )
        wait_until(lambda: c.reload() or c.status != "created", 30, "container started")
        ip = container_ip(c, net) if c.status == "running" else ""
        return c, f"http://{ip}:8000/mcp"

    return start


async def _probe_until_healthy(url: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    result = None
    while time.monotonic() < deadline:
        result = await probe_http(url, timeout=3, expect_tools=NOTES_TOOLS)
        if result.healthy:
            return result
        await _sleep(0.25)
    pytest.fail(f"not healthy within {timeout}s: {result}")


async def _sleep(s: float) -> None:
    await asyncio.sleep(s)


async def test_healthy_server_lists_its_tools(run_notes: Any) -> None:
    _, url = await in_thread(run_notes)
    result = await _probe_until_healthy(url, 30)
    assert sorted(result.tools) == sorted(NOTES_TOOLS)
    assert result.latency_ms > 0


def test_exit_at_start_exits_with_status_1(run_notes: Any) -> None:
    c, _ = run_notes("exit_at_start")
    wait_until(lambda: c.reload() or c.status == "exited", 30, "exit")
    assert c.attrs["State"]["ExitCode"] == 1
    assert b"exit_at_start" in c.logs()


def test_unknown_fail_mode_is_a_config_error(run_notes: Any) -> None:
    c, _ = run_notes("explode")
    wait_until(lambda: c.reload() or c.status == "exited", 30, "exit")
    assert c.attrs["State"]["ExitCode"] == 2
    assert b"is not one of" in c.logs()


async def test_hang_initialize_times_out(run_notes: Any) -> None:
    c, url = await in_thread(run_notes, "hang_initialize")
    await in_thread(wait_until, lambda: b"serving on" in c.logs(), 30, "server listening")
    t0 = time.monotonic()
    result = await probe_http(url, timeout=2, expect_tools=NOTES_TOOLS)
    assert not result.healthy
    # "serving on" comes once the port listens (tests/unit/test_test_servers_listen.py): before,
    # a loaded machine made this read connect_failed now and then.
    assert result.reason == reasons.TIMEOUT, result
    assert time.monotonic() - t0 >= 1.9
    await in_thread(c.reload)
    assert c.status == "running"


async def test_crash_after_serves_then_exits_with_status_3(run_notes: Any) -> None:
    c, url = await in_thread(run_notes, "crash_after:4")
    await _probe_until_healthy(url, 4)
    await in_thread(wait_until, lambda: c.reload() or c.status == "exited", 20, "crash")
    assert c.attrs["State"]["ExitCode"] == 3
    after = await probe_http(url, timeout=2)
    assert not after.healthy


async def test_drop_tool_serves_without_that_tool(run_notes: Any) -> None:
    _c, url = await in_thread(run_notes, "drop_tool:get_note")
    deadline = time.monotonic() + 30
    while True:
        result = await probe_http(url, timeout=3, expect_tools=NOTES_TOOLS)
        if result.reason == reasons.MISSING_TOOLS or time.monotonic() > deadline:
            break
        await _sleep(0.25)
    assert not result.healthy
    assert result.reason == reasons.MISSING_TOOLS
    assert result.missing_tools == ("get_note",)
    assert "get_note" not in result.tools
    assert "add_note" in result.tools


async def test_slow_start_refuses_then_serves(run_notes: Any) -> None:
    c, url = await in_thread(run_notes, "slow_start:4")
    early = await probe_http(url, timeout=1, expect_tools=NOTES_TOOLS)
    assert not early.healthy
    assert early.reason in (reasons.CONNECT_FAILED, reasons.TIMEOUT)
    started = time.monotonic()
    await _probe_until_healthy(url, 30)
    assert b"slow_start" in await in_thread(c.logs)
    assert time.monotonic() - started < 30


async def test_a_2026_call_is_relayed_as_the_sdk_session_would_send_it(run_notes: Any) -> None:
    """adapters/mcp_relay.py against the real server: the same answers as the SDK's session
    for a result, a tool's own error and an unknown tool; a refused request as an MCPError; and
    the relay is used only when the server negotiated the client's revision."""
    from mcp.shared.exceptions import MCPError

    from dtma.adapters import mcp_upstream

    _, url = await in_thread(run_notes)
    await _probe_until_healthy(url, 30)
    upstream = mcp_upstream.HttpUpstream(url, connect_timeout=5)
    try:
        session = await upstream.session()
        assert session.protocol_version == "2026-07-28"
        envelope = {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
        }
        assert upstream.relay(session, {**envelope, PV: "2025-11-25"}) is None
        relay = upstream.relay(session, envelope)
        assert relay is not None

        added = await relay.call_tool("add_note", {"title": "t1", "body": "b"}, envelope, 10)
        via_sdk = await mcp_upstream.call_tool(session, "list_notes", {}, 10)
        relayed = await relay.call_tool("list_notes", {}, envelope, 10)
        assert added["resultType"] == "complete"
        assert not added.get("isError")
        assert relayed == via_sdk
        assert "t1" in str(relayed["content"])

        failed = await relay.call_tool("get_note", {"note_id": 999}, envelope, 10)
        assert failed == await mcp_upstream.call_tool(session, "get_note", {"note_id": 999}, 10)
        assert failed["isError"] is True

        unknown = await relay.call_tool("no_such_tool", {}, envelope, 10)
        assert unknown == await mcp_upstream.call_tool(session, "no_such_tool", {}, 10)

        # a request the server refuses (a revision it does not speak): its JSON-RPC error
        # (HTTP 400) is an MCPError, as the SDK's session raises one
        with pytest.raises(MCPError) as refused:
            await relay.call_tool("list_notes", {}, {**envelope, PV: "2099-01-01"}, 10)
        assert "2026-07-28" in str(refused.value.error.data)  # the versions it supports
    finally:
        await upstream.close()


PV = "io.modelcontextprotocol/protocolVersion"
