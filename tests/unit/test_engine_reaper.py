"""The orphan reaper (engine/watcher.py, ContainerWatcher.relist_once) over the fakes, with a
manual clock: what no toolbox wants goes after the grace period; legacy, held and other
agents' containers never do."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from dtma.domain.containers import ObservedContainer
from dtma.engine import event_kinds as ev
from dtma.engine.engine_watch import EngineWatch
from dtma.engine.journal import Journal
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.engine.watcher import ContainerWatcher
from tests.fake_store import FakeStore
from tests.fakes import FakeEnginePing, FakeRuntime, ManualClock
from tests.unit.engine_harness import Engine, server, spec_json
from tests.virtual_time import eventually, run_virtual

GRACE = 60.0


def _container(cid: str, agent: str = "fake", toolbox: str = "gone") -> ObservedContainer:
    return ObservedContainer(
        id=cid,
        name=f"dtma-{toolbox}-a-r1-{cid}",
        toolbox=toolbox,
        server="a",
        revision=1,
        spec_hash="h",
        state="running",
        exit_code=None,
        ip=None,
        host_port=None,
        started_at="now",
        agent=agent,
    )


async def test_orphans_are_reaped_after_the_grace_period_and_only_ours() -> None:
    runtime, store, clock = FakeRuntime(), FakeStore(), ManualClock()
    runners: dict[str, ToolboxRunner] = {}
    watcher = ContainerWatcher(
        runtime, runners, Journal(store), None, clock, 10.0, GRACE, EngineWatch(FakeEnginePing())
    )
    orphan, legacy, other, held = (
        _container("orphan"),
        _container("legacy", agent=""),
        _container("other", agent="someone-else"),
        _container("held"),
    )
    for c in (orphan, legacy, other, held):
        runtime.add_container(c)
    await runtime.ensure_network("gone", internal=True, prefix=28)
    watcher.hold.hold([held], [])

    await watcher.relist_once()
    clock.advance(GRACE - 1)
    await watcher.relist_once()
    assert set(runtime.containers) == {"orphan", "legacy", "other", "held"}
    assert "gone" in runtime.networks

    clock.advance(1)
    await watcher.relist_once()
    assert set(runtime.containers) == {"legacy", "other", "held"}
    assert "gone" not in runtime.networks
    reaped = [e for e in store.event_rows if e.kind == ev.ORPHAN_REAPED]
    assert len(reaped) == 2


def test_a_container_that_exited_without_an_event_is_restarted_after_the_relist() -> None:
    e = Engine()

    async def main() -> None:
        tb = e.toolbox()
        assert await e.apply(tb, spec_json(server("a"))) == "succeeded"
        watcher = ContainerWatcher(
            e.runtime, {"tb": tb}, e.journal, None, e.clock, 10.0, GRACE, e.engine
        )
        first = e.runtime.of("tb")[0]
        e.runtime.containers[first.id] = replace(first, state="exited", exit_code=3)  # no event
        await watcher.relist_once()
        await eventually(lambda: e.live() == {"a": 1} and first.id not in e.runtime.containers)
        crashed = [x for x in e.store.event_rows if x.kind == ev.SERVER_CRASHED]
        assert [x.message for x in crashed] == ["exit code 3"]
        await tb.halt()

    run_virtual(main)


class SlowListing(FakeRuntime):
    """Listing and removing take a moment, as the engine's do: another pass can start
    meanwhile."""

    async def list_managed(
        self, toolbox: str | None = None, *, brief: bool = False
    ) -> list[ObservedContainer]:
        listed = await super().list_managed(toolbox, brief=brief)
        await asyncio.sleep(0.01)
        return listed

    async def remove(self, container_id: str) -> None:
        await asyncio.sleep(0.05)
        await super().remove(container_id)


async def test_two_relists_at_once_reap_an_orphan_once() -> None:
    """The agent's own periodic relist and another (a test's, an engine return's) at the same
    time: one pass at a time, so one reap and one event (two were seen in CI)."""
    runtime, store, clock = SlowListing(), FakeStore(), ManualClock()
    journal = Journal(store)
    watcher = ContainerWatcher(
        runtime, {}, journal, None, clock, 10.0, GRACE, EngineWatch(FakeEnginePing())
    )
    runtime.add_container(_container("orphan"))
    await watcher.relist_once()
    clock.advance(GRACE)
    await asyncio.gather(watcher.relist_once(), watcher.relist_once())
    assert "orphan" not in runtime.containers
    reaped = [e for e in await store.events(0, "gone") if e.kind == ev.ORPHAN_REAPED]
    assert len(reaped) == 1, reaped
