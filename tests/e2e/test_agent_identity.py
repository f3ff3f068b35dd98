"""A real `dtma serve` with DTMA_AGENT_ID loses its state dir (kill -9, new empty dir): the new
agent of the same id holds the containers it finds, says so in its log and in GET /v1/agent,
and lets the reaper have them only after `dtma adopt`."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from dtma.domain.containers import network_name
from tests.agent_process import DTMA, AgentProcess
from tests.conftest import free_port, wait_until
from tests.engine_fixture import new_toolbox_id, remove_toolboxes, spec, time_server

pytestmark = pytest.mark.e2e

# The second agent's re-list period (DTMA_RELIST_INTERVAL; 10 s by default): at 1 s the test
# sees several re-lists pass the held orphans by in a few seconds instead of waiting out one.
RELIST_S = 1


def _containers(client: Any, agent_id: str, tb: str) -> list[Any]:
    flt = {"label": [f"dtma.toolbox={tb}", f"dtma.agent={agent_id}"]}
    return list(client.containers.list(all=True, filters=flt))


def _network_exists(client: Any, name: str) -> bool:
    return any(n.name == name for n in client.networks.list(names=[name]))


def test_an_agent_on_an_empty_state_dir_holds_its_orphans_until_dtma_adopt(
    tmp_path: Path, images: dict[str, str], docker_client: Any
) -> None:
    agent_id = "e2e-" + secrets.token_hex(3)
    tb = new_toolbox_id()
    first = AgentProcess(
        tmp_path / "first",
        free_port(),
        extra_env={"DTMA_AGENT_ID": agent_id, "DTMA_REAP_GRACE": "24h"},
    )
    second = AgentProcess(
        tmp_path / "second",
        free_port(),
        extra_env={
            "DTMA_AGENT_ID": agent_id,
            "DTMA_REAP_GRACE": "1s",
            "DTMA_RELIST_INTERVAL": f"{RELIST_S}s",
        },
    )
    try:
        first.start()
        status, _, body = first.request(
            "PUT",
            f"/v1/toolboxes/{tb}?wait=90",
            token=first.token,
            raw=spec(time_server("time")).encode(),
        )
        assert (status, body["phase"]) == (200, "healthy"), body
        info = first.get("/v1/agent", first.token)[1]
        assert (info["agent_id"], info["orphans"]["held"]) == (agent_id, False)
        [kept] = _containers(docker_client, agent_id, tb)
        first.stop(signal.SIGKILL)

        second.start()  # same id, empty state dir
        info = second.get("/v1/agent", second.token)[1]
        assert info["agent_id"] == agent_id
        assert info["orphans"] == {
            "held": True,
            "containers": 1,
            "networks": 1,
            "hint": info["orphans"]["hint"],
        }
        assert "dtma adopt" in info["orphans"]["hint"]
        held = [json.loads(line) for line in second.logs().splitlines() if "orphans_held" in line]
        assert held, second.logs()[-2000:]
        assert (held[0]["level"], held[0]["containers"]) == ("warning", 1)
        assert tb in held[0]["toolboxes"]
        time.sleep(4 * RELIST_S + 1)  # several re-list periods, well past the 1 s grace
        [still] = _containers(docker_client, agent_id, tb)
        still.reload()
        assert (still.id, still.status) == (kept.id, "running")

        env = {**os.environ, "DTMA_URL": second.base_url, "DTMA_API_TOKEN": second.token}
        out = subprocess.run([DTMA, "adopt"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "1 containers, 1 networks" in out.stdout
        assert second.get("/v1/agent", second.token)[1]["orphans"]["held"] is False
        wait_until(
            lambda: (
                not _containers(docker_client, agent_id, tb)
                and not _network_exists(docker_client, network_name(tb, agent_id))
            ),
            2 * RELIST_S + 10,
            "the adopted orphans to be reaped",
        )
    finally:
        first.stop(signal.SIGKILL)
        second.stop()
        remove_toolboxes(docker_client, [tb])
