"""An agent in a container maps the paths it writes to the paths the Docker daemon mounts from
(AgentContainer.host_path), seen from inside a real container of the agent image: a tmpfs named
volume maps to its directory on the host (a tmpfs there too, holding what was written inside),
a bind mount to its source, a path on no mount, or hidden by a mount made inside, to nothing."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from dtma.adapters.secret_files import mount_point_fstype
from tests.conftest import in_thread

pytestmark = pytest.mark.integration

# Runs in the stand-in agent container: writes a file on the volume, mounts a tmpfs of its own
# over a directory of it (as a privileged agent that mounts its own tmpfs would), then prints
# the mapping of each path in argv (None: no path the daemon could mount).
MAP = """\
import json, pathlib, subprocess, sys, docker
from dtma.adapters.agent_container import AgentContainer
pathlib.Path("/run/dtma/secrets/agent1/c1").mkdir(parents=True)
pathlib.Path("/run/dtma/secrets/agent1/c1/TOKEN").write_text("written-inside")
pathlib.Path("/run/dtma/secrets/hidden").mkdir()
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/dtma/secrets/hidden"], check=True)
me = AgentContainer("auto")
client = docker.from_env()
out = {"id": me.container_id(client)}
for p in sys.argv[1:]:
    found = me.host_path(client, pathlib.Path(p))
    out[p] = None if found is None else str(found)
# A create whose secret directory the daemon cannot see fails before anything is created.
import asyncio
from dtma.adapters.docker_engine import DockerEngine
from dtma.adapters.docker_runtime import DockerRuntime
from dtma.domain.containers import ContainerRequest
from dtma.errors import SecretsError
req = ContainerRequest(
    name="dtma-never-made", image="none", command=None, env={}, labels={}, network=None,
    network_alias="x", internal_network=True, stdin_open=False, memory=1 << 24, nano_cpus=10**8,
    pids=8, port=None, publish=None, bind_secrets_dir="/run/plain/x",
)
runtime = DockerRuntime(DockerEngine(None), agent_id="t", agent_container=me)
try:
    asyncio.run(runtime.create_and_start(req))
except SecretsError as exc:
    out["refused"] = exc.message
print("MAP", json.dumps(out), flush=True)
"""


async def test_paths_of_an_agent_container_map_to_what_the_daemon_sees(
    docker_client: Any, agent_image: str, make_container: Any, tmp_path: Path
) -> None:
    volume = await in_thread(
        docker_client.volumes.create,
        name="dtma-test-secrets-" + secrets.token_hex(4),
        driver="local",
        driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=1m,mode=0700"},
        labels={"dtma-test": "host-paths"},
    )
    bound = tmp_path / "bound"
    bound.mkdir()
    paths = [
        "/run/dtma/secrets/agent1/c1",  # on the tmpfs volume
        "/run/dtma/secrets",
        "/srv/bound/x/y",  # under a bind mount
        "/run/plain/x",  # on the container's own layer
        "/run/dtma/secrets/hidden/x",  # under the tmpfs mounted inside, which hides the volume
    ]
    try:
        # A long-lived process holds the volume mounted while the test looks at the host side.
        agent = await in_thread(
            make_container,
            agent_image,
            entrypoint=["sh", "-c", 'python3 -c "$0" "$@" && sleep 60', MAP, *paths],
            cap_add=["SYS_ADMIN"],  # for the mount inside only
            network_mode="none",  # the engine is reached over its socket
            volumes={
                volume.name: {"bind": "/run/dtma/secrets", "mode": "rw"},
                str(bound): {"bind": "/srv/bound", "mode": "rw"},
                "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
            },
        )
        out = await in_thread(_mapping_line, agent)
        mapped = json.loads(out)
        assert mapped["id"] == agent.id  # found itself (mountinfo), confirmed by the engine
        await in_thread(volume.reload)
        host_dir = Path(volume.attrs["Mountpoint"])
        assert mapped["/run/dtma/secrets/agent1/c1"] == str(host_dir / "agent1/c1")
        assert mapped["/run/dtma/secrets"] == str(host_dir)
        assert mapped["/srv/bound/x/y"] == str(bound / "x/y")
        assert mapped["/run/plain/x"] is None
        assert mapped["/run/dtma/secrets/hidden/x"] is None
        assert "on no volume or bind mount" in mapped["refused"]
        assert "DTMA_SECRETS_DIR" in mapped["refused"]
        assert not await in_thread(
            docker_client.containers.list, all=True, filters={"name": "dtma-never-made"}
        )
        # What the agent wrote inside is there, on the host, on a tmpfs.
        assert mount_point_fstype(host_dir) == "tmpfs"
        assert (host_dir / "agent1/c1/TOKEN").read_text() == "written-inside"
    finally:
        await in_thread(_remove_after_containers, docker_client, volume)


def _mapping_line(container: Any) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        container.reload()
        logs = container.logs(stdout=True, stderr=False).decode()
        for line in logs.splitlines():  # the agent's own log lines come first
            if line.startswith("MAP "):
                return line.removeprefix("MAP ")
        if container.status == "exited":
            break
        time.sleep(0.2)
    raise AssertionError(container.logs().decode()[-4000:])


def _remove_after_containers(docker_client: Any, volume: Any) -> None:
    for c in docker_client.containers.list(all=True, filters={"volume": volume.name}):
        c.remove(force=True)
    volume.remove(force=True)
