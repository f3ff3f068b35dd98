"""dtma-examples/mcp-time answers initialize, tools/list and ping over a Docker attach socket."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dtma.adapters.mcp_probe import StdioProbeSession
from dtma.domain import probe as reasons
from tests.conftest import in_thread, wait_until

pytestmark = pytest.mark.integration

TIME_TOOLS = ["get_current_time", "convert_time"]


def _stdio_container(make_container: Any, image: str) -> Any:
    c = make_container(
        image,
        stdin_open=True,
        tty=False,
        read_only=True,
        tmpfs={"/tmp": "rw,size=16m"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
    )
    wait_until(lambda: c.reload() or c.status == "running", 30, "mcp-time running")
    return c


async def _hold(session: StdioProbeSession, *, initialize: bool) -> asyncio.Task[None]:
    task = asyncio.create_task(session.run(initialize=initialize, timeout=15))
    assert await session.wait_ready() is None
    return task


async def test_initialize_and_tools_list_over_stdio(
    images: dict[str, str], make_container: Any, docker_client: Any
) -> None:
    c = await in_thread(_stdio_container, make_container, images["mcp-time"])
    session = StdioProbeSession(lambda: docker_client, c.id)
    task = await _hold(session, initialize=True)
    try:
        result = await session.probe(timeout=10, expect_tools=TIME_TOOLS)
        assert result.healthy, result
        assert set(TIME_TOOLS) <= set(result.tools)
        assert (await session.probe(timeout=5, list_tools=False)).healthy  # ping
        missing = await session.probe(timeout=10, expect_tools=["get_current_time", "nope"])
        assert not missing.healthy
        assert missing.reason == reasons.MISSING_TOOLS
        assert missing.missing_tools == ("nope",)
    finally:
        session.close()
        await task


async def test_reattach_to_a_2026_server_rediscovers_and_never_restarts_it(
    images: dict[str, str], make_container: Any, docker_client: Any
) -> None:
    """What an agent restart does: detach and attach again. mcp-server-time speaks 2026-07-28,
    so the first session is a modern one; a re-attached session that does not negotiate sends
    handshake-era requests (what a live handshake-era server wants) and is refused, and the
    stateless discovery that follows works on the same, never restarted, process."""
    c = await in_thread(_stdio_container, make_container, images["mcp-time"])
    first = StdioProbeSession(lambda: docker_client, c.id)
    task = await _hold(first, initialize=True)
    assert (await first.probe(timeout=10, expect_tools=TIME_TOOLS)).healthy
    assert first.modern
    first.close()
    await task

    second = StdioProbeSession(lambda: docker_client, c.id)
    task = await _hold(second, initialize=False)
    try:
        refused = await second.probe(timeout=5, list_tools=False)
        assert refused.reason == reasons.PING_FAILED, refused
    finally:
        second.close()
        await task

    third = StdioProbeSession(lambda: docker_client, c.id)
    task = await _hold(third, initialize=True)
    try:
        assert (await third.probe(timeout=5, list_tools=False)).healthy
        result = await third.probe(timeout=10, expect_tools=TIME_TOOLS)
        assert result.healthy, result
    finally:
        third.close()
        await task
    await in_thread(c.reload)
    assert c.status == "running"
    assert c.attrs["RestartCount"] == 0


async def test_an_exited_container_gives_a_failed_session(
    images: dict[str, str], make_container: Any, docker_client: Any
) -> None:
    c = await in_thread(_stdio_container, make_container, images["mcp-time"])
    await in_thread(c.kill)
    await in_thread(wait_until, lambda: c.reload() or c.status == "exited", 30, "exited")
    session = StdioProbeSession(lambda: docker_client, c.id)
    await session.run(initialize=True, timeout=5)
    result = await session.probe(timeout=5)
    assert not result.healthy
    assert result.reason == reasons.SESSION_CLOSED


async def test_a_session_ends_when_its_server_goes_away(
    images: dict[str, str], make_container: Any, docker_client: Any
) -> None:
    """The attach reaching EOF ends the held session (so the probe opens a new one) instead of
    holding a session whose every request can only fail."""
    c = await in_thread(_stdio_container, make_container, images["mcp-time"])
    session = StdioProbeSession(lambda: docker_client, c.id)
    task = await _hold(session, initialize=True)
    assert (await session.probe(timeout=10, expect_tools=TIME_TOOLS)).healthy
    await in_thread(c.kill)
    await asyncio.wait_for(task, 15)  # before the fix: held until close(), for ever
    assert not (await session.probe(timeout=5)).healthy
