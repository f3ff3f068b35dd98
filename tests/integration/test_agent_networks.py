"""An agent in a container joins each toolbox network it creates or adopts, reaches servers
there over HTTP, and leaves before the network is removed (real Docker; a stand-in container
plays the agent's)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dtma.adapters.agent_container import AgentContainer
from dtma.adapters.docker_engine import DockerEngine
from dtma.adapters.docker_runtime import DockerRuntime
from dtma.domain.containers import network_name
from dtma.errors import DockerError
from tests.conftest import in_thread, wait_until

pytestmark = pytest.mark.integration
AGENT_ID = "test-" + secrets.token_hex(4)

PROBE = (
    "import sys, urllib.request, urllib.error\n"
    "try:\n"
    "    urllib.request.urlopen(sys.argv[1], timeout=3)\n"
    "except urllib.error.HTTPError as e:\n"
    "    print(e.code)\n"
    "else:\n"
    "    print(200)\n"
)


@pytest.fixture
async def engine() -> AsyncIterator[DockerEngine]:
    engine = DockerEngine(None)
    try:
        yield engine
    finally:
        await engine.close()


def _attached(docker_client: Any, network: str) -> set[str]:
    return set(docker_client.api.inspect_network(network).get("Containers") or {})


def _remove_network(docker_client: Any, name: str) -> None:
    for net in docker_client.networks.list(names=[name]):
        with contextlib.suppress(Exception):
            net.remove()


def _http_status(agent: Any, url: str) -> str:
    code, out = agent.exec_run(["python3", "-c", PROBE, url])
    return out.decode().strip() if code == 0 else ""


async def test_the_agent_container_joins_reaches_and_leaves(
    engine: DockerEngine, docker_client: Any, images: dict[str, str], make_container: Any
) -> None:
    agent = await in_thread(make_container, images["mcp-notes"])  # plays the agent's container
    runtime = DockerRuntime(engine, agent_id=AGENT_ID, agent_container=AgentContainer(agent.name))
    toolbox = "nettest-" + secrets.token_hex(3)
    name = network_name(toolbox, AGENT_ID)
    try:
        assert await runtime.ensure_network(toolbox, internal=True) == name
        assert agent.id in await in_thread(_attached, docker_client, name)
        await runtime.ensure_network(toolbox, internal=True)  # idempotent
        server = await in_thread(make_container, images["mcp-notes"], network=name)
        await in_thread(server.reload)
        ip = server.attrs["NetworkSettings"]["Networks"][name]["IPAddress"]
        # Over HTTP, from the agent's container, on the internal network: the MCP endpoint
        # answers (a GET without a session gets a 4xx, which proves the route).
        url = f"http://{ip}:8000/mcp"
        status = await in_thread(wait_until, lambda: _http_status(agent, url), 30, "HTTP")
        assert status.isdigit()
        assert 200 <= int(status) < 500

        # Adoption after an agent restart: a recreated agent container is not on the network.
        await in_thread(docker_client.api.disconnect_container_from_network, agent.id, name)
        assert agent.id not in await in_thread(_attached, docker_client, name)
        await runtime.join_network(toolbox)
        assert agent.id in await in_thread(_attached, docker_client, name)

        await in_thread(server.remove, force=True)
        await runtime.remove_network(toolbox)  # fails with "active endpoints" unless we leave
        assert not await in_thread(docker_client.networks.list, names=[name])
        await runtime.remove_network(toolbox)  # idempotent
        await runtime.join_network(toolbox)  # a missing network is not an error
    finally:
        await in_thread(_remove_network, docker_client, name)


async def test_outside_a_container_nothing_joins(
    engine: DockerEngine, docker_client: Any, images: dict[str, str], make_container: Any
) -> None:
    bystander = await in_thread(make_container, images["mcp-notes"])
    toolbox = "nettest-" + secrets.token_hex(3)
    name = network_name(toolbox, AGENT_ID)
    try:
        for setting in ("none", None):  # None: auto-detect; the test runs on the host
            runtime = DockerRuntime(
                engine, agent_id=AGENT_ID, agent_container=AgentContainer(setting)
            )
            await runtime.ensure_network(toolbox, internal=True)
            assert await in_thread(_attached, docker_client, name) == set()
        assert bystander.id not in await in_thread(_attached, docker_client, name)
        await DockerRuntime(engine, agent_id=AGENT_ID).remove_network(toolbox)
    finally:
        await in_thread(_remove_network, docker_client, name)


async def test_a_named_container_that_does_not_exist_is_a_clear_error(
    engine: DockerEngine, docker_client: Any
) -> None:
    missing = "no-such-agent-" + secrets.token_hex(3)
    toolbox = "nettest-" + secrets.token_hex(3)
    runtime = DockerRuntime(engine, agent_id=AGENT_ID, agent_container=AgentContainer(missing))
    try:
        with pytest.raises(DockerError) as caught:
            await runtime.ensure_network(toolbox, internal=True)
        assert f"DTMA_AGENT_CONTAINER={missing}" in caught.value.message
    finally:
        await in_thread(_remove_network, docker_client, network_name(toolbox, AGENT_ID))
