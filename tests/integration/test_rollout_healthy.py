"""A real 3-server toolbox (two mcp-time over stdio, one mcp-notes over HTTP) becomes healthy."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from dtma.adapters.mcp_probe import probe_http
from dtma.domain.containers import network_name
from dtma.domain.subnets import DEFAULT_POOL
from tests.engine_fixture import (
    DEADLINE,
    MCP_NOTES,
    NOTES_TOOLS,
    TIME_TOOLS,
    EngineHarness,
    new_toolbox_id,
    notes_server,
    spec,
    time_server,
)

pytestmark = pytest.mark.integration


async def test_three_servers_become_healthy_with_their_tools(harness: EngineHarness) -> None:
    tb = new_toolbox_id()
    op = await harness.apply_and_wait(
        tb, spec(time_server("time-a"), time_server("time-b"), notes_server("notes"))
    )
    assert (op.state, op.error) == ("succeeded", None)

    status = await harness.agent.status(tb)
    assert status["phase"] == "healthy"
    assert (status["revision"], status["stable_revision"]) == (1, 1)
    servers = {s["name"]: s for s in status["servers"]}
    assert set(servers) == {"time-a", "time-b", "notes"}
    assert all(s["state"] == "running" and s["health"] == "healthy" for s in servers.values())
    assert all(s["last_error"] is None for s in servers.values())  # startup refusals cleared
    assert sorted(servers["time-a"]["tools"]) == sorted(TIME_TOOLS)
    assert sorted(servers["notes"]["tools"]) == sorted(NOTES_TOOLS)

    recorded = await harness.agent.tools(tb)
    assert sorted(recorded["time-b"]) == sorted(TIME_TOOLS)
    assert sorted(recorded["notes"]) == sorted(NOTES_TOOLS)

    url = servers["notes"]["endpoint"]
    assert url.startswith("http://")
    assert url.endswith(":8000/mcp")
    assert (await probe_http(url, timeout=5, expect_tools=NOTES_TOOLS)).healthy

    kinds = [e.kind for e in await harness.events(tb)]
    assert kinds.count("server_started") == 3
    assert "rollout_passed" in kinds


async def test_containers_are_hardened_and_labelled(harness: EngineHarness) -> None:
    tb = new_toolbox_id()
    op = await harness.apply_and_wait(tb, spec(time_server("time")))
    assert op.state == "succeeded"
    (container,) = await harness.containers(tb)
    attrs: Any = harness.docker_client.api.inspect_container(container.id)
    host = attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert host["ReadonlyRootfs"] is True
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["PidsLimit"] == 256
    assert host["Memory"] == 256 * 1024**2
    assert host["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-file": "3", "max-size": "10m"},
    }
    assert "/tmp" in host["Tmpfs"]
    labels = attrs["Config"]["Labels"]
    assert labels["dtma.toolbox"] == tb
    assert labels["dtma.server"] == "time"
    assert labels["dtma.revision"] == "1"
    assert len(labels["dtma.spec-hash"]) == 64
    assert labels["dtma.agent"] == harness.runtime.agent_id
    net = harness.docker_client.networks.get(network_name(tb, harness.runtime.agent_id))
    assert net.attrs["Internal"] is True
    assert net.attrs["Labels"]["dtma.agent"] == harness.runtime.agent_id
    subnet = ipaddress.ip_network(net.attrs["IPAM"]["Config"][0]["Subnet"])
    assert subnet.subnet_of(ipaddress.ip_network(DEFAULT_POOL))  # type: ignore[arg-type]


async def test_an_identical_spec_is_a_no_op(harness: EngineHarness) -> None:
    tb = new_toolbox_id()
    body = spec(time_server("time"))
    assert (await harness.apply_and_wait(tb, body)).state == "succeeded"
    again = await harness.agent.apply(tb, body)
    assert again.unchanged
    assert again.revision == 1
    assert again.operation is None
    reordered = (
        f'{{"rollout": {{"healthy_deadline": "{DEADLINE}", "min_healthy_time": 1, "order": '
        '"start_first"}, "servers": '
        + body.split('"servers": ', 1)[1].split(', "rollout"')[0]
        + "}"
    )
    assert (await harness.agent.apply(tb, reordered)).unchanged


async def test_a_stdio_server_slower_than_its_probe_timeout_is_retried(
    harness: EngineHarness,
) -> None:
    """The first initialize times out (the server reads stdin after 3 s, the timeout is 1 s);
    the session is opened again on a later probe instead of staying dead until the deadline."""
    tb = new_toolbox_id()
    slow = {
        "name": "slow",
        "image": MCP_NOTES,
        "transport": "stdio",
        "env": {"MCP_TRANSPORT": "stdio", "FAIL_MODE": "slow_start:3"},
        "health": {"expect_tools": NOTES_TOOLS, "interval": "1s", "timeout": "1s"},
    }
    op = await harness.apply_and_wait(tb, spec(slow, deadline="30s"))
    assert (op.state, op.error) == ("succeeded", None)
    (server,) = (await harness.agent.status(tb))["servers"]
    assert server["health"] == "healthy"
