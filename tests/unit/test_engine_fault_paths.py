"""Engine faults on the paths a review found unguarded (issue 19, session 7 leftovers), over
the fakes on virtual time: an engine blip during the agent's start-up recovery, and an
operation that the engine's return runs again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from dtma.domain.containers import ContainerRequest, ObservedContainer
from dtma.engine import event_kinds as ev
from dtma.engine.agent import Agent
from dtma.errors import DockerError, DockerUnavailable
from dtma.spec.hashing import canonical_json, spec_hash
from dtma.spec.models import ToolboxSpec
from tests.fakes import FakeRuntime
from tests.unit.engine_harness import Engine, server, spec_json, start_settled
from tests.virtual_time import eventually, run_virtual

WAIT = 120.0
ROOMY = {"attempts": 5, "interval": "10m", "delay": "1s"}


async def _deployed(e: Engine, *servers: str) -> Agent:
    agent = e.agent()
    await agent.start()
    result = await agent.apply("tb", spec_json(*(server(n) for n in servers), restart=ROOMY))
    assert result.operation is not None
    assert (await agent.wait(result.operation, WAIT)).state == "succeeded"
    return agent


async def _healthy(agent: Agent, servers: int) -> bool:
    status = await agent.status("tb")
    states = [(s["state"], s["health"]) for s in status["servers"]]
    return status["phase"] == "healthy" and states == [("running", "healthy")] * servers


def _restarts(status: dict[str, object]) -> dict[str, int]:
    servers = status["servers"]
    assert isinstance(servers, list)
    return {s["name"]: s["restarts"] for s in servers}


def _blip_during_next_create(e: Engine, server_name: str, down_for: float = 5.0) -> None:
    """The next container create waits; meanwhile the daemon stops (its containers exit), the
    create fails as the engine's fault, and the daemon starts again `down_for` later."""
    hold = e.runtime.create_hold = asyncio.Event()

    async def blip() -> None:
        await asyncio.sleep(0.5)
        e.runtime.daemon_stops()
        e.runtime.create_fails[server_name] = DockerUnavailable("Docker engine unreachable")
        hold.set()
        await asyncio.sleep(down_for)
        del e.runtime.create_fails[server_name]
        e.runtime.daemon_starts()

    asyncio.get_running_loop().create_task(blip())


def test_an_engine_blip_during_start_up_recovery_waits_instead_of_failing() -> None:
    e = Engine()

    async def main() -> None:
        first = await _deployed(e, "a", "b")
        await first.stop()
        crashed = next(c for c in e.runtime.of("tb") if c.server == "a")
        e.runtime.exit(crashed.id, 137)  # recovery recreates it: the create meets the blip
        _blip_during_next_create(e, "a")
        agent = e.agent()
        await agent.start()
        await eventually(lambda: _healthy(agent, 2), within=WAIT)
        assert ev.RECOVERY_FAILED not in e.store.kinds("tb")
        phases = [x.message for x in e.store.event_rows if x.kind == ev.TOOLBOX_PHASE]
        assert not any(m.endswith("-> failed") for m in phases), phases
        assert e.live() == {"a": 1, "b": 1}
        # a: the crash, counted once; b: stopped by the daemon, not crashed, so not counted.
        assert _restarts(await agent.status("tb")) == {"a": 1, "b": 0}
        await agent.stop()

    run_virtual(main)


def test_a_restart_run_again_after_an_engine_fault_restarts_each_server_once() -> None:
    e = Engine()

    async def main() -> None:
        agent = await _deployed(e, "a", "b")
        _blip_during_next_create(e, "a")
        op = await agent.server_operation("tb", "restart", None)
        record = await agent.wait(op, WAIT)
        assert (record.state, record.error) == ("succeeded", None)
        await eventually(lambda: _healthy(agent, 2), within=WAIT)
        assert e.live() == {"a": 1, "b": 1}
        # One asked-for restart each; the daemon's restart replaced what it stopped meanwhile.
        assert _restarts(await agent.status("tb")) == {"a": 1, "b": 1}
        await agent.stop()

    run_virtual(main)


class SlowCreates(FakeRuntime):
    """Creates take a while (as a real one does, in a thread); records those cut short."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = False
        self.cut: list[str] = []

    async def create_and_start(self, request: ContainerRequest) -> ObservedContainer:
        try:
            if self.slow:
                await asyncio.sleep(0.5)
            return await super().create_and_start(request)
        except asyncio.CancelledError:
            self.cut.append(request.labels.get("dtma.server", "?"))
            raise


def test_a_restart_run_again_leaves_the_engine_returns_restarts_to_finish() -> None:
    runtime = SlowCreates()
    e = Engine(runtime=runtime)

    async def main() -> None:
        agent = await _deployed(e, "a", "b")
        runtime.slow = True
        _blip_during_next_create(e, "a")
        op = await agent.server_operation("tb", "restart", None)
        record = await agent.wait(op, WAIT)
        assert (record.state, record.error) == ("succeeded", None)
        await eventually(lambda: _healthy(agent, 2), within=WAIT)
        assert runtime.cut == []  # the run again did not halt the pass's replacements
        assert e.live() == {"a": 1, "b": 1}
        assert _restarts(await agent.status("tb")) == {"a": 1, "b": 1}
        await agent.stop()

    run_virtual(main)


class StopsAfterTheDecision(FakeRuntime):
    """The daemon goes away (live-restore: containers keep running) at the first listing of
    `toolbox` once `decided()` holds, and is back `down_for` later."""

    def __init__(self, decided: Callable[[], bool], toolbox: str = "tb") -> None:
        super().__init__()
        self.decided, self.toolbox, self.down_for, self.tripped = decided, toolbox, 3.0, False

    async def list_managed(
        self, toolbox: str | None = None, *, brief: bool = False
    ) -> list[ObservedContainer]:
        if toolbox == self.toolbox and not self.tripped and self.decided():
            self.tripped = True
            self.daemon_stops(live_restore=True)
            asyncio.get_running_loop().call_later(self.down_for, self.daemon_starts)
        return await super().list_managed(toolbox, brief=brief)


def test_an_interrupted_rollout_kept_by_recovery_stays_succeeded_through_an_engine_blip() -> None:
    holder: list[Engine] = []
    runtime = StopsAfterTheDecision(lambda: ev.RECOVERY_KEPT in holder[0].store.kinds("tb"))
    e = Engine(runtime=runtime)
    holder.append(e)

    async def main() -> None:
        first = await _deployed(e, "a")
        await first.stop()
        body = spec_json(server("a", "img/v2:1"), restart=ROOMY)
        spec = ToolboxSpec.model_validate_json(body)
        rev, _ = await e.store.add_revision("tb", canonical_json(spec), spec_hash(spec))
        op = await e.store.add_operation("op-x", "apply", "tb", rev.number)
        await e.toolbox().create_container(spec.servers[0], rev.number, spec)  # then kill -9
        agent = e.agent()
        await agent.start()
        await eventually(lambda: _healthy(agent, 1), within=WAIT)
        assert runtime.tripped
        finished = await e.store.operation(op.id)
        assert finished is not None
        assert finished.state == "succeeded", finished
        row = await e.store.toolbox("tb")
        assert row is not None
        assert (row.current_revision, row.stable_revision) == (2, 2)
        assert e.live() == {"a": 2}
        await agent.stop()

    run_virtual(main)


class StopsOnRemove(FakeRuntime):
    """The daemon stops (its containers exit) just as the agent removes a container of
    `revision`, and starts again `down_for` later."""

    def __init__(self) -> None:
        super().__init__()
        self.revision: int | None = None
        self.down_for = 5.0

    async def remove(self, container_id: str) -> None:
        c = self.containers.get(container_id)
        if self.revision is not None and c is not None and c.revision == self.revision:
            self.revision = None
            self.daemon_stops()
            asyncio.get_running_loop().call_later(self.down_for, self.daemon_starts)
        await super().remove(container_id)


@pytest.mark.parametrize("order", ["start_first", "stop_first"])
def test_a_rollouts_cleanup_cut_by_the_engine_leaves_no_old_container(order: str) -> None:
    runtime = StopsOnRemove()
    e = Engine(runtime=runtime)

    async def main() -> None:
        agent = await _deployed(e, "a", "b")
        runtime.revision = 1  # the rollout's removal of revision 1 meets the outage
        v2 = "img/v2:1"
        body = spec_json(server("a", v2), server("b", v2), restart=ROOMY, order=order)
        result = await agent.apply("tb", body)
        assert result.operation is not None
        record = await agent.wait(result.operation, WAIT)
        assert (record.state, record.error) == ("succeeded", None)
        assert agent.engine.epoch == 1  # the outage did cut the removal
        # At once, not after the reaper's grace period: nothing of revision 1 is left.
        assert e.runtime.of("tb", revision=1) == []
        await eventually(lambda: _healthy(agent, 2), within=WAIT)
        assert e.live() == {"a": 2, "b": 2}
        assert len(e.runtime.of("tb")) == 2
        assert (await e.store.toolbox("tb")).target_revision is None  # type: ignore[union-attr]
        await agent.stop()

    run_virtual(main)


def test_recovery_keeps_a_given_up_server_failed_even_without_a_container() -> None:
    """restart mode `fail` (DESIGN.md): after `attempts` failures inside `interval` the server
    is `failed` and stays so. An agent restart must not revive it, whether its last container
    is still there (exited) or was removed by a restart whose create then failed."""
    e = Engine()

    async def main() -> None:
        agent = e.agent()
        await agent.start()
        fragile = {"attempts": 1, "interval": "10m", "delay": "1s"}
        result = await agent.apply("tb", spec_json(server("a"), server("b"), restart=fragile))
        assert result.operation is not None
        assert (await agent.wait(result.operation, WAIT)).state == "succeeded"
        e.runtime.create_fails["a"] = DockerError("no space left on device")
        e.runtime.exit(next(c.id for c in e.runtime.of("tb") if c.server == "a"), 1)

        async def a_failed() -> bool:
            servers = (await agent.status("tb"))["servers"]
            return any(s["name"] == "a" and s["state"] == "failed" for s in servers)

        await eventually(a_failed, within=WAIT)
        assert [c.server for c in e.runtime.of("tb")] == ["b"]  # a has no container left
        before = _restarts(await agent.status("tb"))
        await agent.stop()
        del e.runtime.create_fails["a"]  # it could start now: recovery must still not revive it
        created = e.runtime.created
        again = e.agent()
        await start_settled(again)
        status = await again.status("tb")
        assert {s["name"]: s["state"] for s in status["servers"]} == {
            "a": "failed",
            "b": "running",
        }
        assert status["phase"] == "degraded"
        assert _restarts(status) == before
        assert e.runtime.created == created
        assert [c.server for c in e.runtime.of("tb")] == ["b"]
        # A new apply (stop_first: it stops the failed server first) brings it back.
        body = spec_json(server("a", "img/v2:1"), server("b"), order="stop_first")
        result = await again.apply("tb", body)
        assert result.operation is not None
        record = await again.wait(result.operation, WAIT)
        assert (record.state, record.error) == ("succeeded", None)
        assert e.live() == {"a": 2, "b": 2}
        await again.stop()

    run_virtual(main)


def test_a_give_up_decided_by_recovery_is_saved_and_outlives_an_engine_blip() -> None:
    """A server whose budget the crash it had while the agent was away spends is given up by
    the start-up recovery itself; that decision is saved at once, so a pass that the engine cuts
    short and runs again (taking every held container's exit for the engine's) keeps it failed."""
    e = Engine()

    async def main() -> None:
        agent = e.agent()
        await agent.start()
        fragile = {"attempts": 1, "interval": "10m", "delay": "1s"}
        result = await agent.apply("tb", spec_json(server("a"), server("b"), restart=fragile))
        assert result.operation is not None
        assert (await agent.wait(result.operation, WAIT)).state == "succeeded"

        async def a_running_once() -> bool:
            servers = (await agent.status("tb"))["servers"]
            return any(
                s["name"] == "a" and s["state"] == "running" and s["restarts"] == 1 for s in servers
            )

        e.runtime.exit(next(c.id for c in e.runtime.of("tb") if c.server == "a"), 1)
        await eventually(a_running_once, within=WAIT)
        await agent.stop()
        # While the agent is away: a crashes again (its one attempt is spent), b exits.
        e.runtime.exit(next(c.id for c in e.runtime.of("tb") if c.running and c.server == "a"), 1)
        e.runtime.exit(next(c.id for c in e.runtime.of("tb") if c.server == "b"), 137)
        _blip_during_next_create(e, "b")  # recovery restarts b: its create meets the blip
        again = e.agent()
        await again.start()

        async def b_serves() -> bool:
            servers = (await again.status("tb"))["servers"]
            return any(s["name"] == "b" and s["health"] == "healthy" for s in servers)

        await eventually(b_serves, within=WAIT)
        status = await again.status("tb")
        assert {s["name"]: s["state"] for s in status["servers"]} == {
            "a": "failed",
            "b": "running",
        }
        assert _restarts(status)["a"] == 1
        assert again.engine.epoch >= 1  # the blip did happen
        assert (await e.store.restart_states("tb"))["a"].gave_up
        await again.stop()

    run_virtual(main)


def test_an_engine_blip_during_recovery_does_not_revive_a_given_up_server() -> None:
    """A given-up server's exited container is held by its failed runner when the engine goes
    away during the agent's start-up recovery; the retried pass must not take that container's
    exit for the engine's: given up it stays, its container left as it is."""
    e = Engine()

    async def main() -> None:
        agent = e.agent()
        await agent.start()
        fragile = {"attempts": 1, "interval": "10m", "delay": "1s"}
        result = await agent.apply("tb", spec_json(server("a"), server("b"), restart=fragile))
        assert result.operation is not None
        assert (await agent.wait(result.operation, WAIT)).state == "succeeded"

        async def a_is(state: str, restarts: int) -> bool:
            servers = (await agent.status("tb"))["servers"]
            return any(
                s["name"] == "a" and s["state"] == state and s["restarts"] == restarts
                for s in servers
            )

        e.runtime.exit(next(c.id for c in e.runtime.of("tb") if c.server == "a"), 1)
        await eventually(lambda: a_is("running", 1), within=WAIT)
        e.runtime.exit(next(c.id for c in e.runtime.of("tb") if c.running and c.server == "a"), 1)
        await eventually(lambda: a_is("failed", 1), within=WAIT)
        await agent.stop()
        e.runtime.exit(next(c.id for c in e.runtime.of("tb") if c.server == "b"), 137)
        _blip_during_next_create(e, "b")  # recovery restarts b: its create meets the blip
        again = e.agent()
        await again.start()

        async def b_serves() -> bool:
            servers = (await again.status("tb"))["servers"]
            return any(s["name"] == "b" and s["health"] == "healthy" for s in servers)

        await eventually(b_serves, within=WAIT)
        status = await again.status("tb")
        assert {s["name"]: s["state"] for s in status["servers"]} == {
            "a": "failed",
            "b": "running",
        }
        assert _restarts(status)["a"] == 1
        assert e.live() == {"b": 1}
        # Its exited container is left as it is, as a recovery without the blip leaves it.
        assert sorted(c.server for c in e.runtime.of("tb")) == ["a", "b"]
        assert again.engine.epoch >= 1  # the blip did happen
        await again.stop()

    run_virtual(main)
