"""Faults below the agent (engine/engine_watch.py, engine/engine_return.py) over the fakes on
virtual time: a Docker daemon that stops and starts again is the engine's fault, never a
server's. Restarts pause while it is away, no restart budget is charged, and on its return every
toolbox is reconciled as after an adoption (live-restore: nothing is restarted)."""

from __future__ import annotations

import asyncio

import pytest

from dtma.engine import event_kinds as ev
from dtma.engine.agent import Agent
from dtma.engine.engine_watch import EngineWatch
from dtma.errors import DockerUnavailable
from tests.fakes import FakeEnginePing
from tests.unit.engine_harness import Engine, server, spec_json
from tests.virtual_time import eventually, run_virtual

# One attempt in ten minutes: a single charged failure would leave the server `failed`.
FRAGILE = {"attempts": 1, "interval": "10m", "delay": "1s"}


async def _deployed(e: Engine, *servers: str, **extra: object) -> Agent:
    agent = e.agent()
    await agent.start()
    body = spec_json(*(server(name) for name in servers), restart=FRAGILE, **extra)
    result = await agent.apply("tb", body)
    assert result.operation is not None
    assert (await agent.wait(result.operation, 60)).state == "succeeded"
    return agent


async def _all_serving(agent: Agent, servers: int) -> bool:
    status = await agent.status("tb")
    states = [(s["state"], s["health"]) for s in status["servers"]]
    return status["phase"] == "healthy" and states == [("running", "healthy")] * servers


def _restart_daemon(e: Engine, *, live_restore: bool = False, down_for: float = 5.0) -> None:
    async def restart() -> None:
        e.runtime.daemon_stops(live_restore=live_restore)
        await asyncio.sleep(down_for)
        e.runtime.daemon_starts()

    asyncio.get_running_loop().create_task(restart())


def test_six_daemon_restarts_cost_no_restart_budget() -> None:
    e = Engine()

    async def main() -> None:
        agent = await _deployed(e, "a", "b")
        for n in range(1, 7):
            before = {s["name"]: s["restarts"] for s in (await agent.status("tb"))["servers"]}
            _restart_daemon(e)
            await eventually(lambda: e.runtime.down, within=1)
            await eventually(lambda: not agent.engine.up, within=2)
            await eventually(lambda n=n: agent.engine.epoch == n, within=30)
            await eventually(lambda: _all_serving(agent, 2), within=30)
            running = [c for c in e.runtime.of("tb") if c.running]
            assert sorted(c.server for c in running) == ["a", "b"]  # one container per server
            assert len(e.runtime.of("tb")) == 2  # the exited ones were removed
            after = {s["name"]: s["restarts"] for s in (await agent.status("tb"))["servers"]}
            assert all(after[name] - before[name] <= 1 for name in before)
        kinds = e.store.kinds()
        assert ev.SERVER_FAILED not in kinds
        assert kinds.count(ev.TOOLBOX_RECONCILED) == 6
        await agent.stop()

    run_virtual(main)


def test_live_restore_keeps_every_container_and_restarts_nothing() -> None:
    e = Engine()

    async def main() -> None:
        agent = await _deployed(e, "a", "b")
        ids = sorted(c.id for c in e.runtime.of("tb"))
        for n in range(1, 4):
            _restart_daemon(e, live_restore=True, down_for=2.0)
            await eventually(lambda n=n: agent.engine.epoch == n, within=30)
            await eventually(lambda: _all_serving(agent, 2), within=30)
        assert sorted(c.id for c in e.runtime.of("tb")) == ids
        status = await agent.status("tb")
        assert [s["restarts"] for s in status["servers"]] == [0, 0]
        assert ev.SERVER_RESTARTED not in e.store.kinds()
        assert e.store.kinds().count(ev.CONTAINER_ADOPTED) == 6
        await agent.stop()

    run_virtual(main)


def test_a_crash_seen_just_before_the_daemon_went_is_refunded() -> None:
    """A die event that reached the agent before the daemon stopped: the attempt it was
    charged is taken back once the restart finds the engine gone."""
    e = Engine()

    async def main() -> None:
        agent = await _deployed(e, "a")
        for n in range(1, 4):
            first = e.runtime.of("tb")[0].id
            e.runtime.exit(first, 137)
            await asyncio.sleep(0.1)  # the runner has charged it and waits out its delay
            _restart_daemon(e)
            await eventually(lambda n=n: agent.engine.epoch == n, within=30)
            await eventually(lambda: _all_serving(agent, 1), within=30)
        assert ev.SERVER_FAILED not in e.store.kinds()
        await agent.stop()

    run_virtual(main)


def test_an_apply_while_the_daemon_is_down_is_kept_and_rolls_out_when_it_is_back() -> None:
    e = Engine()

    async def main() -> None:
        agent = await _deployed(e, "a")
        e.runtime.daemon_stops()
        await eventually(lambda: not agent.engine.up, within=2)
        with pytest.raises(DockerUnavailable, match="recorded and runs once the engine is back"):
            await agent.apply("tb", spec_json(server("a"), server("b"), restart=FRAGILE))
        ops = [op for op in e.store.operation_rows.values() if op.revision == 2]
        assert [op.state for op in ops] == ["running"]
        await asyncio.sleep(10)
        e.runtime.daemon_starts()
        assert (await agent.wait(ops[0].id, 60)).state == "succeeded"
        status = await agent.status("tb")
        assert status["revision"] == 2
        await eventually(lambda: _all_serving(agent, 2), within=30)
        await agent.stop()

    run_virtual(main)


def test_a_rollout_whose_gate_the_daemon_interrupts_runs_again() -> None:
    e = Engine()

    async def main() -> None:
        agent = await _deployed(e, "a")
        body = spec_json(
            server("a"), server("b"), restart=FRAGILE, min_healthy="20s", deadline="60s"
        )
        result = await agent.apply("tb", body)
        assert result.operation is not None
        await eventually(lambda: len(e.runtime.of("tb", revision=2)) == 2, within=10)
        _restart_daemon(e)
        record = await agent.wait(result.operation, 300)
        assert (record.state, record.error) == ("succeeded", None)
        await eventually(lambda: _all_serving(agent, 2), within=30)
        assert {c.revision for c in e.runtime.of("tb")} == {2}
        await agent.stop()

    run_virtual(main)


def test_the_epoch_moves_once_per_outage_and_after_a_quick_restart() -> None:
    async def main() -> None:
        ping = FakeEnginePing(up=False)
        watch = EngineWatch(ping)
        moved: list[int] = []
        watch.on_back(moved.append)
        assert not await watch.check()  # down from the start: agent start is the first pass
        ping.up = True
        assert await watch.check()
        assert (watch.epoch, moved) == (0, [])
        ping.up = False
        assert not await watch.confirm(0)
        assert not await watch.check()
        ping.up = True
        assert await watch.check()
        assert (watch.epoch, moved) == (1, [1])
        assert await watch.confirm(1)
        watch.lost("the event stream ended")  # a restart quicker than any ping
        assert not watch.up
        assert not await watch.confirm(1)  # it answers, but in a new epoch
        assert (watch.epoch, moved) == (2, [1, 2])

    run_virtual(main)


def test_a_crash_during_a_vault_outage_waits_for_vault_and_charges_once() -> None:
    e = Engine()
    secret = {"name": "TOKEN", "vault": {"mount": "secret", "path": "app", "key": "token"}}
    e.vault.values[("secret", "app", "token")] = "v1"

    async def main() -> None:
        agent = e.agent()
        await agent.start()
        restart = {"attempts": 2, "interval": "10m", "delay": "1s"}
        body = spec_json(server("a", secrets=[secret]), restart=restart)
        result = await agent.apply("tb", body)
        assert result.operation is not None
        assert (await agent.wait(result.operation, 60)).state == "succeeded"
        e.vault.down = True
        e.runtime.exit(e.runtime.of("tb")[0].id, 1)
        await asyncio.sleep(300)  # five minutes of Vault outage: many retries, one attempt
        reads = e.vault.reads
        assert reads > 5
        waits = [x for x in e.store.event_rows if x.kind == ev.SERVER_START_FAILED]
        assert len(waits) == 1  # told once
        assert ev.SERVER_FAILED not in e.store.kinds()
        e.vault.down = False
        await eventually(lambda: _all_serving(agent, 1), within=60)
        status = await agent.status("tb")
        assert status["servers"][0]["restarts"] == 1
        await agent.stop()

    run_virtual(main)


def test_a_ping_that_began_before_the_stream_broke_does_not_close_the_outage() -> None:
    """The dying daemon may still answer a ping sent just before its event stream ended: that
    answer must not start a new epoch (and a reconcile of everything against a daemon that is
    going away)."""

    class SlowPing(FakeEnginePing):
        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()

        async def ping(self) -> None:
            await self.release.wait()
            await super().ping()

    async def main() -> None:
        ping = SlowPing()
        watch = EngineWatch(ping)
        ping.release.set()
        assert await watch.check()
        ping.release.clear()
        in_flight = asyncio.ensure_future(watch.check())
        await asyncio.sleep(0)
        watch.lost("the event stream ended")
        ping.release.set()  # the old daemon's answer
        assert not await in_flight
        assert watch.epoch == 0
        assert await watch.confirm(0) is False  # a new ping: it answers, in a new epoch
        assert watch.epoch == 1

    run_virtual(main)
