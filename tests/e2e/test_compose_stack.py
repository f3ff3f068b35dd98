"""compose/README.md, word for word: the compose stack (agent + OpenBao, images built locally)
runs the example toolbox to healthy, with its secret file in the notes container; a recreated
agent container joins the toolbox network again; everything is torn down even on failure.

The README's commands run unchanged, as root and as a user in the docker group (nobody plus the
docker group, with a tmpfs $XDG_RUNTIME_DIR as a login session has; that user skips only
`make images`, the images being on the shared engine already); the secrets directory
follows $XDG_RUNTIME_DIR, which the test points at a directory of its own; the compose project,
the ports and the reap grace come from the environment (COMPOSE_PROJECT_NAME, DTMA_PORT,
DTMA_OPENBAO_PORT, DTMA_REAP_GRACE), which the compose file reads.
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

from tests.conftest import REPO, free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

README = REPO / "compose/README.md"
COMPOSE = str(REPO / "compose/docker-compose.yml")
NOBODY = 65534
TOOLBOX = "example"
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
    assert len(blocks) == 2, "compose/README.md should hold a start block and a clean-up block"
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
        ["docker-compose", "-f", COMPOSE, *args],
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


def _agent_id(env: dict[str, str]) -> str:
    return _compose(env, "ps", "-q", "agent").strip()


def _toolbox_network(docker_client: Any) -> dict[str, Any]:
    """The example toolbox's network (named dtma-<agent id>-<toolbox>; found by its label)."""
    (found,) = docker_client.api.networks(filters={"label": f"dtma.toolbox={TOOLBOX}"})
    return dict(docker_client.api.inspect_network(found["Id"]))


def _on_network(docker_client: Any, container_id: str) -> bool:
    return container_id in (_toolbox_network(docker_client).get("Containers") or {})


def _teardown(env: dict[str, str], docker_client: Any, secrets_dir: Path) -> None:
    """Backstop after a failure: everything this test may have left, and only that."""
    subprocess.run(
        ["docker-compose", "-f", COMPOSE, "--profile", "example", "down", "-v", "--remove-orphans"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=180,
    )
    for c in docker_client.containers.list(all=True, filters={"label": f"dtma.toolbox={TOOLBOX}"}):
        c.remove(force=True, v=True)
    for net in docker_client.networks.list(filters={"label": f"dtma.toolbox={TOOLBOX}"}):
        net.remove()
    if subprocess.run(["mountpoint", "-q", str(secrets_dir)], check=False).returncode == 0:
        subprocess.run(["umount", str(secrets_dir)], check=False)


def test_example_waits_for_a_ready_agent_and_dev_tokens_say_so() -> None:
    env = {**os.environ, "DTMA_API_TOKEN": "t" * 32}
    env.pop("DTMA_DEV_VAULT_TOKEN", None)
    config = yaml.safe_load(_compose(env, "--profile", "example", "config"))
    services = config["services"]
    assert "/v1/ready" in " ".join(services["agent"]["healthcheck"]["test"])
    assert services["example"]["depends_on"]["agent"] == {"condition": "service_healthy"}
    assert services["example"]["depends_on"]["example-secret"] == {
        "condition": "service_completed_successfully"
    }
    assert services["agent"]["environment"]["VAULT_TOKEN"].startswith("dev-only")
    assert services["openbao"]["environment"]["BAO_DEV_ROOT_TOKEN_ID"].startswith("dev-only")
    assert "DEV ONLY" in Path(COMPOSE).read_text()


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


@pytest.mark.parametrize("user", ["root", "docker-group"])
def test_the_compose_readme_runs_the_example_to_healthy(docker_client: Any, user: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("the test plays both users, which needs root")
    for tool in ("docker-compose", "mountpoint"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing; `make test` installs it (scripts/ensure-tools)")
    if docker_client.networks.list(filters={"label": f"dtma.toolbox={TOOLBOX}"}):
        pytest.fail(f"a network of toolbox {TOOLBOX} exists already: is another compose stack up?")
    runtime = Path(tempfile.mkdtemp(prefix="dtma-compose-xdg-", dir="/run"))
    as_user: list[str] = []
    if user == "docker-group":  # a login session's /run/user/UID: a tmpfs of the user's own
        as_user = _docker_group_user()
        opts = f"size=16m,mode=0700,uid={NOBODY},gid={NOBODY}"
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(runtime)], check=True)
    secrets_dir = runtime / "dtma-compose/secrets"
    start, cleanup = _blocks()
    if as_user:
        # The images are on the shared engine already (built by root). `make images` would need
        # a venv the user owns, as the user's own clone has; this one links into root's Python.
        assert start.startswith("make images\n")
        start = start.removeprefix("make images\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DTMA_", "XDG_"))},
        "XDG_RUNTIME_DIR": str(runtime),
        "HOME": str(runtime),
        "COMPOSE_PROJECT_NAME": "dtmatest" + secrets.token_hex(4),
        "DTMA_PORT": str(free_port()),
        "DTMA_OPENBAO_PORT": str(free_port()),
        "DTMA_REAP_GRACE": "24h",  # never reap other people's test containers
        "DTMA_API_TOKEN": "replaced-by-the-readme",  # compose needs it set, even to stop
    }
    inspect_env = {**env, "DTMA_SECRETS_DIR": str(secrets_dir)}
    try:
        run = _bash(start, env, timeout=600, as_user=as_user)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
        assert "phase healthy" in run.stdout

        status = _status(inspect_env)
        assert status["phase"] == "healthy"
        servers = {s["name"]: s for s in status["servers"]}
        assert set(servers) == {"time", "notes"}
        assert servers["notes"]["endpoint"].startswith("http://")  # probed over the network
        notes = docker_client.containers.get(servers["notes"]["container_id"])
        code, out = notes.exec_run(["cat", "/run/secrets/NOTES_TOKEN"])
        assert code == 0, out
        assert out.decode() == "dev-only-example-token"
        assert _on_network(docker_client, _agent_id(inspect_env))
        # The agent listens on the compose network only: a server cannot reach its API.
        net = _toolbox_network(docker_client)
        agent_ip = net["Containers"][_agent_id(inspect_env)]["IPv4Address"].split("/")[0]
        code, out = notes.exec_run(["python3", "-c", REFUSED, agent_ip])
        assert (code, out.decode().strip()) == (0, "refused")

        # A new agent container (same state volume) adopts the toolbox and joins its network.
        old_agent = _agent_id(inspect_env)
        _compose(inspect_env, "up", "-d", "--force-recreate", "--no-deps", "agent", timeout=180)
        new_agent = _agent_id(inspect_env)
        assert new_agent != old_agent
        wait_until(lambda: _on_network(docker_client, new_agent), 90, "the new agent to join")
        wait_until(lambda: _status(inspect_env)["phase"] == "healthy", 90, "the adopted toolbox")
        adopted = {s["name"]: s for s in _status(inspect_env)["servers"]}
        assert adopted["notes"]["container_id"] == servers["notes"]["container_id"]
        assert adopted["notes"]["restarts"] == 0

        # "In the same shell": what the start block exported (the secrets dir) is set again.
        done = _bash(cleanup, inspect_env, 300, as_user)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        assert "delete succeeded" in done.stdout
        assert not docker_client.networks.list(filters={"label": f"dtma.toolbox={TOOLBOX}"})
        assert not docker_client.containers.list(
            all=True, filters={"label": f"dtma.toolbox={TOOLBOX}"}
        )
        project = inspect_env["COMPOSE_PROJECT_NAME"]
        assert not docker_client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={project}"}
        )
        assert not docker_client.volumes.list(
            filters={"label": f"com.docker.compose.project={project}"}
        )
    finally:
        _teardown(inspect_env, docker_client, secrets_dir)
        if user == "docker-group":
            subprocess.run(["umount", "-l", str(runtime)], check=False)
        shutil.rmtree(runtime, ignore_errors=True)
