"""An HTTP server's probes run on the session the gateway holds for it (engine/probes.py): N
probes open no N sessions, and the first probe's session is the gateway's: a healthy server
costs one session. Counted from the server's side: mcp-notes with LOG_HANDSHAKES=1 logs
each handshake request (`initialize`, `server/discover`) it receives, so every session a client
opens shows up in `docker logs`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from dtma.adapters.mcp_probe import probe_http
from dtma.domain.containers import ObservedContainer
from dtma.engine.probes import ContainerProbe
from dtma.spec.models import ServerSpec
from tests.conftest import container_ip, in_thread, wait_until

pytestmark = pytest.mark.integration

NOTES_TOOLS = ["add_note", "list_notes", "get_note", "delete_note", "search_notes"]
PROBES = 8


def _handshakes(container: Any) -> int:
    logs = container.logs(stdout=False, stderr=True).decode(errors="replace")
    return sum(1 for line in logs.splitlines() if line.startswith("mcp-notes: handshake "))


@pytest.fixture
def notes(images: dict[str, str], make_container: Any, make_network: Any) -> Any:
    def start() -> tuple[Any, ObservedContainer]:
        net = make_network(internal=True)
        c = make_container(
            images["mcp-notes"],
            environment={"LOG_HANDSHAKES": "1"},
            network=net.name,
            read_only=True,
            tmpfs={"/tmp": "rw,size=16m"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
        )
        wait_until(lambda: c.reload() or c.status == "running", 30, "container running")
        observed = ObservedContainer(
            id=c.id,
            name=c.name,
            toolbox="t",
            server="notes",
            revision=1,
            spec_hash="",
            state="running",
            exit_code=None,
            ip=container_ip(c, net),
            host_port=None,
            started_at="",
        )
        return c, observed

    return start


async def test_probes_of_an_http_server_reuse_the_gateways_session(
    notes: Any, docker_client: Any, images: dict[str, str]
) -> None:
    container, observed = await in_thread(notes)
    spec = ServerSpec.model_validate(
        {
            "name": "notes",
            "image": images["mcp-notes"],
            "transport": "streamable-http",
            "port": 8000,
            "path": "/mcp",
            "health": {"expect_tools": NOTES_TOOLS, "timeout": 10},
        }
    )
    probe = ContainerProbe(lambda: docker_client, spec, observed, fresh=True)
    try:
        # Listening first (a bare TCP connect is no handshake), so that the first probe meets a
        # server that answers and its session is the only one opened.
        await wait_listening(observed.ip or "", 8000, within=120)
        result = await probe.check(full=True)  # the gate's first probe
        assert result.healthy, result
        opened = await in_thread(_handshakes, container)
        assert opened >= 1  # the count sees sessions

        for i in range(PROBES):
            result = await probe.check(full=i % 2 == 0)  # steady probes, full and liveness
            assert result.healthy, result
            assert sorted(result.tools) == sorted(NOTES_TOOLS)
        defs = await probe.tool_defs(3.0)  # the gateway's own call, on the same session
        assert sorted(d["name"] for d in defs) == sorted(NOTES_TOOLS)
        assert await in_thread(_handshakes, container) == opened

        # A fresh probe (what every probe did before) is counted: the measure can fail. One
        # session's worth of handshake requests is all the first probe and the gateway cost.
        assert (await probe_http(probe.endpoint or "", timeout=10)).healthy
        assert await in_thread(_handshakes, container) == 2 * opened
    finally:
        await probe.close()


async def wait_listening(host: str, port: int, within: float) -> None:
    deadline = time.monotonic() + within  # a loaded 2-core host starts it slowly
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return
