"""Two agents on one engine, each with its own id: neither touches the other's containers or
networks; orphan networks of an agent's own id are reaped; containers from before agent ids
are left alone unless a toolbox of this agent owns them; an agent on an empty state dir holds
the orphans of its own id until told to adopt them."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import docker.errors
import pytest

from dtma.domain.containers import network_name
from dtma.domain.subnets import DEFAULT_POOL
from tests.conftest import MCP_TIME, TEST_LABEL
from tests.engine_fixture import EngineHarness, engine_harness, new_toolbox_id, spec, time_server

pytestmark = pytest.mark.integration
T = TypeVar("T")
# The harnesses here re-list every second (engine_harness's default is 2 s): the waits below
# span several re-list periods, and cost less the shorter those are.
RELIST_S = 1


@contextlib.asynccontextmanager
async def started(state_dir: Path, **kwargs: Any) -> AsyncIterator[EngineHarness]:
    gen = engine_harness(state_dir, relist_interval=RELIST_S, **kwargs)
    try:
        yield await gen.__anext__()
    finally:
        await gen.aclose()


async def until(pred: Callable[[], Awaitable[T]], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await pred()
        if value:
            return value
        await asyncio.sleep(0.3)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def _network(client: Any, name: str) -> Any:
    try:
        return client.networks.get(name)
    except docker.errors.NotFound:
        return None


def _orphan_network(client: Any, agent: str, toolbox: str) -> Any:
    return client.networks.create(
        f"dtma-{agent}-{toolbox}",
        driver="bridge",
        internal=True,
        labels={"dtma.toolbox": toolbox, "dtma.network": "true", "dtma.agent": agent},
    )


async def test_two_agents_on_one_engine_leave_each_other_alone(
    tmp_path: Path, images: dict[str, str], docker_client: Any
) -> None:
    client = docker_client
    legacy = await asyncio.to_thread(
        client.containers.run,
        MCP_TIME,
        detach=True,
        labels={
            "dtma.toolbox": "ghost-" + secrets.token_hex(3),
            "dtma.server": "x",
            "dtma.revision": "1",
            TEST_LABEL: "identity",
        },
    )
    made: list[Any] = []
    try:
        async with (
            started(tmp_path / "a", reap_grace=2) as a,
            started(tmp_path / "b", reap_grace=2) as b,
        ):
            tb = new_toolbox_id()  # the same toolbox id on both agents
            results = await asyncio.gather(
                a.apply_and_wait(tb, spec(time_server("time"))),
                b.apply_and_wait(tb, spec(time_server("time"))),
            )
            assert [r.state for r in results] == ["succeeded", "succeeded"]
            before = {h.runtime.agent_id: await h.containers(tb) for h in (a, b)}
            assert all(len(cs) == 1 for cs in before.values())
            nets = {
                h.runtime.agent_id: await asyncio.to_thread(
                    client.networks.get, network_name(tb, h.runtime.agent_id)
                )
                for h in (a, b)
            }
            subnets = [
                ipaddress.IPv4Network(n.attrs["IPAM"]["Config"][0]["Subnet"]) for n in nets.values()
            ]
            assert not subnets[0].overlaps(subnets[1])
            assert all(s.subnet_of(ipaddress.IPv4Network(DEFAULT_POOL)) for s in subnets)
            # an orphan network of each agent's id: each reaps its own, never the other's
            ghost = "gone-" + secrets.token_hex(3)
            for h in (a, b):
                made.append(
                    await asyncio.to_thread(_orphan_network, client, h.runtime.agent_id, ghost)
                )
            for h in (a, b):
                name = network_name(ghost, h.runtime.agent_id)
                await until(
                    lambda n=name: asyncio.to_thread(lambda: _network(client, n) is None),
                    2 + 4 * RELIST_S + 5,
                    f"the orphan network {name} to be reaped",
                )
            await asyncio.sleep(3 * RELIST_S)  # several more re-list periods
            for h in (a, b):
                agent = h.runtime.agent_id
                after = await h.containers(tb)
                assert [(c.id, c.state) for c in after] == [
                    (c.id, "running") for c in before[agent]
                ]
                assert (await h.agent.status(tb))["phase"] == "healthy"
                assert await asyncio.to_thread(_network, client, network_name(tb, agent))
                reaped = [
                    e.message
                    for e in await h.repo.events(0, None, limit=1000)
                    if e.kind == "orphan_reaped"
                ]
                assert reaped == [next(m for m in reaped if network_name(ghost, agent) in m)], (
                    reaped
                )
            # a container from before agent ids, of no toolbox of theirs: nobody reaped it
            await asyncio.to_thread(legacy.reload)
            # deleting the toolbox on one agent leaves no network of it, and spares the other
            op = await a.wait(await a.agent.delete(tb))
            assert op.state == "succeeded"
            assert (
                await asyncio.to_thread(_network, client, network_name(tb, a.runtime.agent_id))
                is None
            )
            assert len(await b.containers(tb)) == 1
            assert await asyncio.to_thread(_network, client, network_name(tb, b.runtime.agent_id))
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            await asyncio.to_thread(legacy.remove, force=True)
        for net in made:
            with contextlib.suppress(docker.errors.NotFound):
                await asyncio.to_thread(net.remove)


async def test_an_agent_on_an_empty_state_dir_holds_its_orphans_until_adopt(
    tmp_path: Path, images: dict[str, str], docker_client: Any
) -> None:
    agent_id = "hold-" + secrets.token_hex(3)
    tb = new_toolbox_id()
    async with started(tmp_path / "old", agent_id=agent_id) as old:
        assert (await old.apply_and_wait(tb, spec(time_server("time")))).state == "succeeded"
        kept = await old.containers(tb)
        await old.agent.stop()  # the agent goes; its containers keep running
        # the state dir is lost; a new agent of the same id starts on an empty one
        async with started(
            tmp_path / "new", agent_id=agent_id, reap_grace=1, hold_orphans=True
        ) as new:
            info = await new.agent.info()
            assert info["agent_id"] == agent_id
            assert info["orphans"]["held"] is True
            assert (info["orphans"]["containers"], info["orphans"]["networks"]) == (1, 1)
            assert "dtma adopt" in info["orphans"]["hint"]
            await asyncio.sleep(1 + 3 * RELIST_S)
            assert [(c.id, c.state) for c in await new.containers(tb)] == [(kept[0].id, "running")]
            assert await asyncio.to_thread(_network, docker_client, network_name(tb, agent_id))
            assert new.agent.adopt_orphans() == {"containers": 1, "networks": 1}
            assert (await new.agent.info())["orphans"]["held"] is False
            await until(
                lambda: _gone(new, tb, docker_client, agent_id),
                1 + 4 * RELIST_S + 10,
                "the adopted orphans to be reaped",
            )


async def _gone(h: EngineHarness, tb: str, client: Any, agent_id: str) -> bool:
    if await h.containers(tb):
        return False
    return await asyncio.to_thread(_network, client, network_name(tb, agent_id)) is None
