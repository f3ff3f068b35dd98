"""ServerRunner's call bookkeeping (pure logic over hand-written fakes): a removed server drains
its calls in flight within a bound, refuses new ones meanwhile, and a call on a server that exits
ends with a retryable error instead of hanging. The gateway's name routing and filter, and a
toolbox being deleted is gone for MCP clients."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest

from dtma.domain.containers import ObservedContainer
from dtma.domain.probe import ProbeResult
from dtma.engine.engine_watch import EngineWatch
from dtma.engine.probes import ContainerProbe
from dtma.engine.server_runner import ServerRunner
from dtma.engine.supervisor import Supervisor
from dtma.errors import ServerUnavailable
from dtma.gateway.routing import EngineGateway, ToolNotFound, exported_name, split_name
from dtma.spec.models import Restart, ServerSpec, ToolFilter
from tests.fakes import FakeEnginePing


class BlockingProbe:
    """A probe whose tool calls wait until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.closed = False

    endpoint = None

    async def check(self, *, full: bool) -> ProbeResult:
        return ProbeResult.ok(1.0)

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        timeout: float,
        envelope: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.started.set()
        await self.release.wait()
        return {"content": [{"type": "text", "text": name}]}

    async def close(self) -> None:
        self.closed = True


class Host:
    id = "tb"

    def __init__(self) -> None:
        self.removed: list[str] = []

    async def create_container(self, server: ServerSpec, revision: int) -> ObservedContainer:
        raise AssertionError("not used")

    async def remove_container(self, container: ObservedContainer) -> None:
        self.removed.append(container.id)

    async def emit(
        self, kind: str, *, server: str, revision: int, reason: str = "", message: str = ""
    ) -> None:
        return None

    def server_changed(self) -> None:
        return None

    async def record_tools(self, server: str, revision: int, tools: list[str]) -> None:
        return None

    async def save_restarts(
        self,
        server: str,
        revision: int,
        restarts: int,
        history: Sequence[float],
        gave_up: bool,
        pending: bool = False,
    ) -> None:
        return None


def make_runner(probe: BlockingProbe, host: Host) -> ServerRunner:
    container = ObservedContainer(
        "c1", "dtma-tb-time-r1-x", "tb", "time", 1, "h", "running", None, None, None, ""
    )
    runner = ServerRunner(
        host,
        ServerSpec(name="time", image="i"),
        1,
        container,
        fresh=True,
        restart_policy=Restart(),
        probe_factory=lambda *_: cast(ContainerProbe, probe),
        clock=lambda: 0.0,
        supervisor=Supervisor(),
        engine=EngineWatch(FakeEnginePing()),
    )
    runner.health = "healthy"
    return runner


async def test_remove_waits_for_a_call_in_flight_and_refuses_new_ones() -> None:
    probe, host = BlockingProbe(), Host()
    runner = make_runner(probe, host)
    call = asyncio.create_task(runner.call_tool("get_current_time", {}))
    await probe.started.wait()
    removal = asyncio.create_task(runner.remove())
    await asyncio.sleep(0.05)
    assert not removal.done()  # the container is still there while the call runs
    assert host.removed == []
    with pytest.raises(ServerUnavailable, match="being replaced"):
        await runner.call_tool("get_current_time", {})
    probe.release.set()
    assert (await call)["content"][0]["text"] == "get_current_time"
    await asyncio.wait_for(removal, 1)
    assert host.removed == ["c1"]


async def test_drain_is_bounded() -> None:
    probe, host = BlockingProbe(), Host()
    runner = make_runner(probe, host)
    call = asyncio.create_task(runner.call_tool("slow", {}))
    await probe.started.wait()
    await asyncio.wait_for(runner.drain(timeout=0.1), 1)
    call.cancel()


async def test_a_call_on_a_server_that_exits_is_retryable_not_a_hang() -> None:
    probe, host = BlockingProbe(), Host()
    runner = make_runner(probe, host)
    call = asyncio.create_task(runner.call_tool("get_current_time", {}))
    await probe.started.wait()
    runner.on_container_exit("c1", 137)
    with pytest.raises(ServerUnavailable, match="exited during the call"):
        await asyncio.wait_for(call, 1)
    runner.state = "restarting"
    with pytest.raises(ServerUnavailable, match="restarting"):
        await runner.call_tool("get_current_time", {})


def test_names_split_on_the_first_separator() -> None:
    assert exported_name("time", "get_current_time") == "time__get_current_time"
    assert split_name("time__get__x") == ("time", "get__x")
    assert split_name("time") is None
    assert split_name("__x") is None


def test_filter_deny_wins_and_empty_allow_allows_all() -> None:
    assert ToolFilter().permits("a__b")
    f = ToolFilter(allow=["time__*"], deny=["time__convert_time"])
    assert f.permits("time__get_current_time")
    assert not f.permits("time__convert_time")
    assert not f.permits("notes__add_note")


class SwallowingProbe(BlockingProbe):
    """A call that swallows the first cancel it gets (as SDK task groups sometimes do)."""

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        timeout: float,
        envelope: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            await self.release.wait()  # until cancelled again
        return {"content": []}


async def test_a_call_that_swallows_the_cancel_is_still_cut_when_the_server_exits() -> None:
    probe, host = SwallowingProbe(), Host()
    runner = make_runner(probe, host)
    call = asyncio.create_task(runner.call_tool("get_current_time", {}))
    await probe.started.wait()
    runner.on_container_exit("c1", 137)
    with pytest.raises(ServerUnavailable, match="exited during the call"):
        await asyncio.wait_for(call, 5)  # the cut repeats its cancel (NUDGE_S)


async def test_a_caller_that_goes_away_cancels_its_call_and_is_not_told_the_server_exited() -> None:
    probe, host = BlockingProbe(), Host()
    runner = make_runner(probe, host)
    call = asyncio.create_task(runner.call_tool("get_current_time", {}))
    await probe.started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(runner.drain(timeout=1), 2)  # nothing left in flight


def test_a_toolbox_being_deleted_is_gone_for_mcp_clients() -> None:
    runners = {"tb": SimpleNamespace(phase="healthy", servers={})}
    gateway = EngineGateway(cast(Any, runners))
    assert gateway.knows("tb")
    assert not gateway.knows("other")
    for phase in ("degraded", "failed", "stopped", "deploying"):
        runners["tb"].phase = phase
        assert gateway.knows("tb"), phase
    runners["tb"].phase = "deleting"
    assert not gateway.knows("tb")


async def test_a_server_of_the_spec_without_a_runner_is_retryable_and_an_unknown_one_is_not() -> (
    None
):
    """Between runners (the agent recovering after a kill -9, a stop-first rollout), a server the
    serving spec names has no runner for a moment: its tools are there again shortly, so a call
    is told to retry, not that the tool does not exist (seen in the kill -9 loop in CI)."""
    spec = SimpleNamespace(servers=[SimpleNamespace(name="time")], gateway=None)
    tb = SimpleNamespace(phase="deploying", servers={}, gate_runners={}, spec=spec)
    gateway = EngineGateway(cast(Any, {"tb": tb}))
    with pytest.raises(ServerUnavailable):
        await gateway.call("tb", "time__get_current_time", {})
    with pytest.raises(ToolNotFound):
        await gateway.call("tb", "notes__list_notes", {})
    tb.spec = None
    tb.gate_runners = {"notes": object()}  # the first revision, under its gate
    with pytest.raises(ServerUnavailable):
        await gateway.call("tb", "notes__list_notes", {})
    with pytest.raises(ToolNotFound):
        await gateway.call("tb", "time__get_current_time", {})
    # Known to the agent, no revision loaded yet (start-up recovery has not reached it): what it
    # serves is not known yet, so nothing is "unknown" (seen in the kill -9 loop in CI).
    tb.gate_runners = {}
    with pytest.raises(ServerUnavailable):
        await gateway.call("tb", "time__get_current_time", {})


class ListingProbe(BlockingProbe):
    """A probe whose server now lists `names` (its calls answer at once)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = names
        self.release.set()

    def tool_list_changes(self) -> int:
        return 0

    async def tool_defs(self, timeout: float) -> list[dict[str, Any]]:
        return [{"name": n, "inputSchema": {"type": "object"}} for n in self.names]


async def test_a_tool_the_listing_shows_is_callable_before_the_probe_names_it() -> None:
    """A server that adds a tool (and says so with list_changed) is listed afresh at once, while
    the probes' names follow at the next probe: a client that listed the new tool and calls it
    at once is served, not told the tool does not exist (seen in CI: pin `off`, a rug pull). A
    name the server does not list is still unknown."""
    probe = ListingProbe(["get_current_time", "peek"])
    runner = make_runner(probe, Host())
    runner.tools = ["get_current_time"]  # what the last probe saw
    spec = SimpleNamespace(
        servers=[SimpleNamespace(name="time")],
        gateway=SimpleNamespace(pin="off", tools=ToolFilter()),
    )
    tb = SimpleNamespace(phase="healthy", servers={"time": runner}, gate_runners={}, spec=spec)
    gateway = EngineGateway(cast(Any, {"tb": tb}))
    answer = await gateway.call("tb", "time__peek", {"path": "/"})
    assert answer["content"][0]["text"] == "peek"
    with pytest.raises(ToolNotFound):
        await gateway.call("tb", "time__nope", {})
