"""Operations on real containers: restart/stop/start (whole toolbox or named servers), delete,
one operation at a time per toolbox, and the orphan reaper's grace period."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import docker.errors
import pytest

from dtma.domain.containers import network_name
from dtma.errors import NotFound
from tests.conftest import TEST_LABEL
from tests.engine_fixture import (
    MCP_TIME,
    EngineHarness,
    new_toolbox_id,
    notes_server,
    spec,
    time_server,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def reap_grace() -> float:
    return 1.0


async def _deploy(h: EngineHarness) -> str:
    tb = new_toolbox_id()
    op = await h.apply_and_wait(tb, spec(time_server("time"), notes_server("notes")))
    assert op.state == "succeeded"
    return tb


def _by_name(status: dict) -> dict:  # type: ignore[type-arg]
    return {s["name"]: s for s in status["servers"]}


async def test_stop_and_start_named_servers(harness: EngineHarness) -> None:
    tb = await _deploy(harness)
    op = await harness.wait(await harness.agent.server_operation(tb, "stop", ["notes"]))
    assert op.state == "succeeded"
    servers = _by_name(await harness.agent.status(tb))
    assert servers["notes"]["state"] == "stopped"
    assert servers["time"]["state"] == "running"
    states = {c.server: c.state for c in await harness.containers(tb)}
    assert states == {"notes": "exited", "time": "running"}
    assert not any(e.kind == "server_crashed" for e in await harness.events(tb))

    op = await harness.wait(await harness.agent.server_operation(tb, "start", ["notes"]))
    assert op.state == "succeeded"
    await _eventually_healthy(harness, tb)
    assert {c.state for c in await harness.containers(tb)} == {"running"}


async def test_stop_everything_then_start(harness: EngineHarness) -> None:
    tb = await _deploy(harness)
    await harness.wait(await harness.agent.server_operation(tb, "stop", None))
    assert (await harness.agent.status(tb))["phase"] == "stopped"
    assert {c.state for c in await harness.containers(tb)} == {"exited"}
    await harness.wait(await harness.agent.server_operation(tb, "start", None))
    await _eventually_healthy(harness, tb)


async def test_restart_recreates_only_the_named_server(harness: EngineHarness) -> None:
    tb = await _deploy(harness)
    before = _by_name(await harness.agent.status(tb))
    op = await harness.wait(await harness.agent.server_operation(tb, "restart", ["time"]))
    assert op.state == "succeeded"
    await _eventually_healthy(harness, tb)
    after = _by_name(await harness.agent.status(tb))
    assert after["time"]["container_id"] != before["time"]["container_id"]
    assert after["time"]["restarts"] == 1
    assert after["notes"]["container_id"] == before["notes"]["container_id"]
    assert len(await harness.containers(tb)) == 2


async def test_unknown_server_names_are_refused(harness: EngineHarness) -> None:
    tb = await _deploy(harness)
    with pytest.raises(NotFound, match="no server nope"):
        await harness.agent.server_operation(tb, "restart", ["nope"])


async def test_delete_removes_containers_network_and_state(harness: EngineHarness) -> None:
    tb = await _deploy(harness)
    op = await harness.wait(await harness.agent.delete(tb))
    assert op.state == "succeeded"
    assert await harness.containers(tb) == []
    nets = await asyncio.to_thread(
        harness.docker_client.networks.list, names=[network_name(tb, harness.runtime.agent_id)]
    )
    assert nets == []
    with pytest.raises(NotFound):
        await harness.agent.status(tb)
    assert [e.kind for e in await harness.events(tb)][-2:] == [
        "toolbox_deleted",
        "operation_finished",
    ]


async def test_operations_on_one_toolbox_run_one_at_a_time_and_the_last_apply_wins(
    harness: EngineHarness,
) -> None:
    tb = new_toolbox_id()
    first = await harness.agent.apply(tb, spec(time_server("time")))
    second = await harness.agent.apply(tb, spec(time_server("time", env={"A": "1"})))
    third = await harness.agent.apply(tb, spec(time_server("time", env={"A": "2"})))
    ops = [first.operation, second.operation, third.operation]
    results = [await harness.wait(op) for op in ops if op]  # type: ignore[arg-type]
    # The first was in its gate and the second queued when the third came: both superseded.
    assert [r.state for r in results] == ["failed", "failed", "succeeded"]
    assert all(
        "superseded by revision 3" in (r.error or "") or "revision 3 was applied" in (r.error or "")
        for r in results[:2]
    ), results
    events = await harness.events(tb)
    spans = []
    for op in ops:
        cursors = [e.cursor for e in events if e.operation == op]
        spans.append((min(cursors), max(cursors)))
    assert spans[0][1] < spans[1][0], spans  # the second started after the first ended
    assert spans[1][1] < spans[2][0], spans
    status = await harness.agent.status(tb)
    assert (status["revision"], status["stable_revision"]) == (3, 3)
    assert {c.revision for c in await harness.containers(tb)} == {3}


async def test_orphans_are_reaped_only_after_the_grace_period(harness: EngineHarness) -> None:
    ghost = "ghost-" + secrets.token_hex(3)
    container = await asyncio.to_thread(
        harness.docker_client.containers.run,
        MCP_TIME,
        detach=True,
        stdin_open=True,
        labels={
            "dtma.toolbox": ghost,
            "dtma.server": "x",
            "dtma.revision": "1",
            "dtma.agent": harness.runtime.agent_id,
            TEST_LABEL: "reaper",
        },
    )
    try:
        await harness.agent.watcher.relist_once()  # first sighting starts the grace period
        assert [c.id for c in await harness.runtime.list_managed(ghost)] == [container.id]
        await asyncio.sleep(1.1)
        await harness.agent.watcher.relist_once()
        assert await harness.runtime.list_managed(ghost) == []
        reaped = [e for e in await harness.repo.events(0, ghost) if e.kind == "orphan_reaped"]
        assert len(reaped) == 1
        assert container.id[:12] in reaped[0].message
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            await asyncio.to_thread(container.remove, force=True)


async def _eventually_healthy(h: EngineHarness, tb: str, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        status = await h.agent.status(tb)
        if status["phase"] == "healthy" and all(
            s["health"] == "healthy" and s["state"] == "running" for s in status["servers"]
        ):
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"toolbox {tb} not healthy: {await h.agent.status(tb)}")
