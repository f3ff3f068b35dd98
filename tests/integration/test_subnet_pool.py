"""Toolbox networks on subnets from the agent's own pool, through the real Docker adapter:
more than Docker's ~30 default networks, two agents racing on one pool, release on delete."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
from collections.abc import AsyncIterator
from typing import Any

import docker.errors
import pytest

from dtma.adapters.docker_engine import DockerEngine
from dtma.adapters.docker_runtime import DockerRuntime
from dtma.domain.containers import network_name

pytestmark = pytest.mark.integration

POOL = "10.213.0.0/16"


@pytest.fixture
async def engine(docker_client: Any) -> AsyncIterator[DockerEngine]:
    engine = DockerEngine(None)
    try:
        yield engine
    finally:
        await engine.close()


def _sweep(client: Any, agent_id: str) -> None:
    for net in client.networks.list(filters={"label": f"dtma.agent={agent_id}"}):
        with contextlib.suppress(docker.errors.NotFound):
            net.remove()


async def test_forty_toolbox_networks_get_distinct_pool_subnets_and_all_go_on_delete(
    engine: DockerEngine, docker_client: Any
) -> None:
    agent = "sub-" + secrets.token_hex(3)
    runtime = DockerRuntime(engine, agent_id=agent, subnet_pool=POOL)
    toolboxes = [f"n{i}-{secrets.token_hex(2)}" for i in range(40)]
    try:
        names = await asyncio.gather(
            *(runtime.ensure_network(tb, internal=True, prefix=27) for tb in toolboxes)
        )
        assert names == [network_name(tb, agent) for tb in toolboxes]
        own = await runtime.list_networks()
        assert sorted(n.toolbox for n in own) == sorted(toolboxes)
        subnets = [ipaddress.IPv4Network(n.subnet) for n in own]
        assert all(s.subnet_of(ipaddress.IPv4Network(POOL)) and s.prefixlen == 27 for s in subnets)
        assert len(set(subnets)) == 40
        # idempotent: a second ensure keeps the network and its subnet
        await runtime.ensure_network(toolboxes[0], internal=True, prefix=27)
        assert {n.subnet for n in await runtime.list_networks()} == {n.subnet for n in own}
        await asyncio.gather(*(runtime.remove_network(tb) for tb in toolboxes))
        assert await runtime.list_networks() == []
    finally:
        await asyncio.to_thread(_sweep, docker_client, agent)


async def test_two_agents_racing_on_one_pool_never_share_a_subnet(
    engine: DockerEngine, docker_client: Any
) -> None:
    agents = ["race-a-" + secrets.token_hex(3), "race-b-" + secrets.token_hex(3)]
    runtimes = [DockerRuntime(engine, agent_id=a, subnet_pool=POOL) for a in agents]
    try:
        await asyncio.gather(
            *(
                rt.ensure_network(f"t{i}", internal=True, prefix=27)
                for i in range(12)
                for rt in runtimes
            )
        )
        seen: list[ipaddress.IPv4Network] = []
        for rt in runtimes:
            own = await rt.list_networks()
            assert len(own) == 12  # each sees its own networks only
            seen += [ipaddress.IPv4Network(n.subnet) for n in own]
        assert len(set(seen)) == 24
        for a, b in ((a, b) for i, a in enumerate(seen) for b in seen[i + 1 :]):
            assert not a.overlaps(b), (a, b)
        # the same toolbox id on both agents: two networks, and removing one spares the other
        await runtimes[0].remove_network("t0")
        assert {n.toolbox for n in await runtimes[1].list_networks()} >= {"t0"}
    finally:
        for a in agents:
            await asyncio.to_thread(_sweep, docker_client, a)


async def test_a_too_small_existing_network_is_a_clear_error(
    engine: DockerEngine, docker_client: Any
) -> None:
    agent = "small-" + secrets.token_hex(3)
    runtime = DockerRuntime(engine, agent_id=agent, subnet_pool=POOL)
    try:
        await runtime.ensure_network("grow", internal=True, prefix=27)
        with pytest.raises(Exception, match=r"needs a /25; delete the toolbox"):
            await runtime.ensure_network("grow", internal=True, prefix=25)
    finally:
        await asyncio.to_thread(_sweep, docker_client, agent)
