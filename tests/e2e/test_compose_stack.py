"""compose/README.md, word for word: `up -d` alone starts the agent and OpenBao (images built
locally), `run --rm example` deploys the example toolbox to healthy with its secret file on the
stack's tmpfs volume, the token is printed by the documented command; a recreated agent container
joins the toolbox network again; everything is torn down even on failure.

The README's commands run unchanged, as root and as a user in the docker group (nobody plus the
docker group; that user skips only `make images`, the images being on the shared engine
already). The README needs no variable; the test gives each run a compose project of its own
(COMPOSE_PROJECT_NAME, the variable form of `-p`) and free host ports (DTMA_PORT,
DTMA_OPENBAO_PORT), which the compose file reads, so that it never meets another stack on this
shared engine. Everything it looks at or removes is found by that project or by the stack's own
agent id.
"""

from __future__ import annotations

import grp
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from dtma.adapters.secret_files import mount_point_fstype
from tests.conftest import REPO, free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

README = REPO / "compose/README.md"
COMPOSE = str(REPO / "compose/docker-compose.yml")
NOBODY = 65534
TOOLBOX = "example"
SEEDED = "dev-only-example-token"  # what the example-secret service writes into OpenBao
REFUSED = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], 8750), timeout=3)\n"
    "except ConnectionRefusedError:\n"
    "    print('refused')\n"
    "else:\n"
    "    print('connected')\n"
)


def _blocks() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 3, "compose/README.md should hold a start, a look and a clean-up block"
    return [str(b) for b in blocks]


def _bash(
    script: str, env: dict[str, str], timeout: float, as_user: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(as_user or []), "bash", "-euo", "pipefail", "-c", script],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _compose(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        ["docker-compose", "-p", env["COMPOSE_PROJECT_NAME"], "-f", COMPOSE, *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"docker-compose {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def _status(env: dict[str, str]) -> Any:
    out = _compose(env, "exec", "-T", "agent", "dtma", "get", TOOLBOX, "--json")
    return json.loads(out)


def _agent_container(env: dict[str, str]) -> str:
    return _compose(env, "ps", "-q", "agent").strip()


def _owned(agent_id: str) -> dict[str, list[str]]:
    """Docker filters for what the stack's agent made for the example toolbox."""
    return {"label": [f"dtma.toolbox={TOOLBOX}", f"dtma.agent={agent_id}"]}


def _toolbox_network(docker_client: Any, agent_id: str) -> dict[str, Any]:
    (found,) = docker_client.api.networks(filters=_owned(agent_id))
    return dict(docker_client.api.inspect_network(found["Id"]))


def _on_network(docker_client: Any, agent_id: str, container_id: str) -> bool:
    return container_id in (_toolbox_network(docker_client, agent_id).get("Containers") or {})


def _teardown(env: dict[str, str], docker_client: Any, agent_id: str | None) -> None:
    """Backstop after a failure: everything this run may have left, and only that."""
    subprocess.run(
        [
            *("docker-compose", "-p", env["COMPOSE_PROJECT_NAME"], "-f", COMPOSE),
            *("--profile", "example", "down", "-v", "--remove-orphans"),
        ],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=180,
    )
    if agent_id is None:
        return
    for c in docker_client.containers.list(all=True, filters=_owned(agent_id)):
        c.remove(force=True, v=True)
    for net in docker_client.networks.list(filters=_owned(agent_id)):
        net.remove()


def test_the_stack_needs_no_variable_and_keeps_secret_files_on_a_tmpfs_volume() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTMA_")}
    config = yaml.safe_load(_compose({**env, "COMPOSE_PROJECT_NAME": "x"}, "config"))
    services = config["services"]
    always = {name for name, svc in services.items() if not svc.get("profiles")}
    assert always == {"agent", "openbao"}, "`up -d` starts these two only"
    agent = services["agent"]
    assert "/v1/ready" in " ".join(agent["healthcheck"]["test"])
    assert "DTMA_API_TOKEN" not in agent["environment"]  # generated into the state volume
    assert "dtma-secrets:/run/dtma/secrets:rw" in agent["volumes"]
    assert agent["environment"]["DTMA_SECRETS_DIR"] == "/run/dtma/secrets"
    opts = config["volumes"]["dtma-secrets"]["driver_opts"]
    assert (opts["type"], opts["device"]) == ("tmpfs", "tmpfs")
    assert "mode=0700" in opts["o"].split(",")
    assert agent["environment"]["VAULT_TOKEN"].startswith("dev-only")
    assert services["openbao"]["environment"]["BAO_DEV_ROOT_TOKEN_ID"].startswith("dev-only")
    assert "DEV ONLY" in Path(COMPOSE).read_text()

    example = services["example"]
    assert example["depends_on"]["agent"] == {"condition": "service_healthy"}
    assert example["depends_on"]["example-secret"] == {
        "condition": "service_completed_successfully"
    }
    assert "dtma-state:/var/lib/dtma:ro" in example["volumes"]  # the token, read-only
    assert "DTMA_API_TOKEN" not in example["environment"]


def _docker_group_user() -> list[str]:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is missing")
    docker_gid = grp.getgrnam("docker").gr_gid
    prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", f"--groups={docker_gid}"]
    readable = subprocess.run(
        [*prefix, "test", "-r", "compose/docker-compose.yml"], cwd=REPO, check=False
    )
    if readable.returncode != 0:
        pytest.skip(
            f"{REPO} is not readable by an unprivileged user (a private checkout, such as a "
            "clone into mktemp -d's 0700 directory); the docker-group run needs a readable one"
        )
    return prefix


def _check_secret_file_from_the_host(docker_client: Any, container_id: str, project: str) -> Path:
    """The container's /run/secrets comes from the stack's secrets volume, on a tmpfs on the
    host, and holds the seeded secret. Returns the host directory."""
    notes = docker_client.api.inspect_container(container_id)
    (mount,) = [m for m in notes["Mounts"] if m["Destination"] == "/run/secrets"]
    assert mount["Type"] == "bind"
    assert not mount["RW"]
    volume = docker_client.api.inspect_volume(f"{project}_dtma-secrets")
    source = Path(mount["Source"])
    assert source.is_relative_to(volume["Mountpoint"]), (source, volume["Mountpoint"])
    assert mount_point_fstype(source) == "tmpfs"
    assert (source / "NOTES_TOKEN").read_text() == SEEDED
    return source


@pytest.mark.parametrize("user", ["root", "docker-group"])
def test_the_compose_readme_runs_the_example_to_healthy(docker_client: Any, user: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("the test plays both users, which needs root")
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is missing; `make test` installs it (scripts/ensure-tools)")
    home = Path(tempfile.mkdtemp(prefix="dtma-compose-home-"))
    as_user: list[str] = []
    start, look, cleanup = _blocks()
    if user == "docker-group":
        as_user = _docker_group_user()
        os.chown(home, NOBODY, NOBODY)
        # The images are on the shared engine already (built by root). `make images` would need
        # a venv the user owns, as the user's own clone has; this one links into root's Python.
        assert start.startswith("make images\n")
        start = start.removeprefix("make images\n")
    project = "dtmatest" + secrets.token_hex(4)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DTMA_", "XDG_", "COMPOSE_"))},
        "HOME": str(home),
        "COMPOSE_PROJECT_NAME": project,
        "DTMA_PORT": str(free_port()),
        "DTMA_OPENBAO_PORT": str(free_port()),
    }
    agent_id: str | None = None
    try:
        run = _bash(start, env, timeout=600, as_user=as_user)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
        assert "phase healthy" in run.stdout
        agent_id = _compose(env, "exec", "-T", "agent", "cat", "/var/lib/dtma/agent-id").strip()
        token = _compose(env, "exec", "-T", "agent", "cat", "/var/lib/dtma/api-token").strip()

        # Look around: the token printed, the status from inside and, with it, from the host.
        seen = _bash(look, env, timeout=120, as_user=as_user)
        assert seen.returncode == 0, seen.stdout[-4000:] + seen.stderr[-4000:]
        printed, rest = seen.stdout.split("\n", 1)
        assert printed == token
        assert len(token) >= 32
        assert "healthy" in rest
        from_host = json.loads(rest.strip().splitlines()[-1])  # curl's answer, the last line
        assert (from_host["id"], from_host["phase"]) == (TOOLBOX, "healthy")

        status = _status(env)
        assert status["phase"] == "healthy"
        servers = {s["name"]: s for s in status["servers"]}
        assert set(servers) == {"time", "notes"}
        assert servers["notes"]["endpoint"].startswith("http://")  # probed over the network
        notes = docker_client.containers.get(servers["notes"]["container_id"])
        code, out = notes.exec_run(["cat", "/run/secrets/NOTES_TOKEN"])
        assert (code, out.decode()) == (0, SEEDED)
        source = _check_secret_file_from_the_host(docker_client, notes.id, project)
        me = _agent_container(env)
        assert _on_network(docker_client, agent_id, me)
        # The agent listens on the compose network only: a server cannot reach its API.
        net = _toolbox_network(docker_client, agent_id)
        agent_ip = net["Containers"][me]["IPv4Address"].split("/")[0]
        code, out = notes.exec_run(["python3", "-c", REFUSED, agent_ip])
        assert (code, out.decode().strip()) == (0, "refused")

        # A new agent container (same state volume) adopts the toolbox and joins its network.
        # Its secrets volume is a fresh tmpfs; the running server keeps the file it has.
        _compose(env, "up", "-d", "--force-recreate", "--no-deps", "agent", timeout=180)
        new_agent = _agent_container(env)
        assert new_agent != me
        wait_until(lambda: _on_network(docker_client, agent_id, new_agent), 90, "a new join")
        wait_until(lambda: _status(env)["phase"] == "healthy", 90, "the adopted toolbox")
        adopted = {s["name"]: s for s in _status(env)["servers"]}
        assert adopted["notes"]["container_id"] == notes.id
        assert adopted["notes"]["restarts"] == 0
        assert notes.exec_run(["cat", "/run/secrets/NOTES_TOKEN"]).output.decode() == SEEDED

        done = _bash(cleanup, env, 300, as_user)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        assert "delete succeeded" in done.stdout
        assert not docker_client.networks.list(filters=_owned(agent_id))
        assert not docker_client.containers.list(all=True, filters=_owned(agent_id))
        assert not docker_client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={project}"}
        )
        assert not docker_client.volumes.list(
            filters={"label": f"com.docker.compose.project={project}"}
        )
        assert not source.exists()  # the tmpfs went with its volume
    finally:
        _teardown(env, docker_client, agent_id)
        shutil.rmtree(home, ignore_errors=True)
