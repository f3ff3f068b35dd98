"""`dtma serve` as a non-root user in the docker group (as `make run` runs for such a user):
without DTMA_SECRETS_DIR it keeps secret files under $XDG_RUNTIME_DIR/dtma/secrets and a file
secret reaches the container; with no usable default it stops with exit 2 naming the setting.

The user is simulated with setpriv (uid/gid nobody, supplementary group docker, no
capabilities), which needs root; $XDG_RUNTIME_DIR is a tmpfs owned by that user, as logind
makes /run/user/UID."""

from __future__ import annotations

import grp
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_process import DTMA, AgentProcess
from tests.conftest import BaoServer, free_port, wait_until
from tests.engine_fixture import notes_server, remove_toolboxes, spec

pytestmark = pytest.mark.integration
NOBODY = 65534


def _as_user() -> list[str]:
    if os.geteuid() != 0:
        pytest.skip("acting as another user needs root; run as a docker-group user instead")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv (util-linux) is missing")
    docker_gid = grp.getgrnam("docker").gr_gid
    prefix = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", f"--groups={docker_gid}"]
    if subprocess.run([*prefix, "test", "-r", DTMA], check=False).returncode != 0:
        pytest.skip(
            f"{DTMA} is not readable by an unprivileged user: a parent of this checkout is "
            "private (mktemp -d makes 0700); the non-root agent runs from a readable checkout"
        )
    return prefix


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """A tmpfs owned by the simulated user, standing in for /run/user/UID."""
    _as_user()
    path = Path(tempfile.mkdtemp(prefix="dtma-xdg-", dir="/tmp"))
    opts = f"size=16m,mode=0700,uid={NOBODY},gid={NOBODY}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()


def _env(bao: BaoServer, runtime: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DTMA_", "XDG_", "VAULT_"))}
    return {
        **env,
        "HOME": str(runtime),
        "DTMA_STATE_DIR": str(runtime / "state"),
        "DTMA_REAP_GRACE": "24h",
        "VAULT_ADDR": bao.addr,
        "VAULT_TOKEN": bao.root_token,
        **extra,
    }


def test_without_a_usable_secrets_dir_it_exits_2_naming_the_setting(
    bao: BaoServer, runtime_dir: Path
) -> None:
    env = _env(bao, runtime_dir, DTMA_LISTEN=f"127.0.0.1:{free_port()}")
    run = subprocess.run(
        [*_as_user(), DTMA, "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "DTMA_SECRETS_DIR=/run/dtma/secrets" in run.stderr
    assert "XDG_RUNTIME_DIR" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_secret_files_live_under_xdg_runtime_dir(
    bao: BaoServer, runtime_dir: Path, docker_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DTMA_SECRETS_DIR", raising=False)
    tb = "nonroot-" + secrets.token_hex(3)
    value = "v-" + secrets.token_hex(8)
    bao.client().secrets.kv.v2.create_or_update_secret(
        path=f"dtma/{tb}/notes", secret={"api_key": value}, mount_point="secret"
    )
    state = runtime_dir / "state"
    state.mkdir()
    os.chown(state, NOBODY, NOBODY)
    env = _env(bao, runtime_dir, XDG_RUNTIME_DIR=str(runtime_dir))
    mine = {k: v for k, v in env.items() if k.startswith(("DTMA_", "VAULT_", "XDG_", "HOME"))}
    agent = AgentProcess(state, free_port(), extra_env=mine, argv_prefix=_as_user())
    secret = {
        "name": "API_KEY",
        "vault": {"mount": "secret", "path": f"dtma/{tb}/notes", "key": "api_key"},
    }
    try:
        agent.start()
        agent.made.append(tb)
        body = json.loads(spec(notes_server("notes", secrets=[secret]), deadline="60s"))
        status, _, resp = agent.request(
            "PUT", f"/v1/toolboxes/{tb}?wait=90", token=agent.token, body=body, timeout=120
        )
        assert status == 200, resp
        assert resp["operation"]["state"] == "succeeded", resp["operation"]
        (container,) = docker_client.containers.list(filters={"label": f"dtma.toolbox={tb}"})
        out = container.exec_run(["python3", "-c", "print(open('/run/secrets/API_KEY').read())"])
        assert out.exit_code == 0, out.output
        assert out.output.decode().strip() == value
        agent_id = (state / "agent-id").read_text().strip()  # secret files live per agent id
        on_host = runtime_dir / "dtma/secrets" / agent_id / container.name / "API_KEY"
        assert on_host.stat().st_uid == NOBODY
        assert (runtime_dir / "dtma/secrets").stat().st_mode & 0o777 == 0o700
        status, _, _ = agent.request("DELETE", f"/v1/toolboxes/{tb}", token=agent.token)
        assert status == 202
        # A non-root agent leaves the directory read-only (0555); it still removes it.
        wait_until(lambda: not on_host.parent.exists(), 30, "the secret directory removed")
    finally:
        agent.stop()
        remove_toolboxes(docker_client, [tb])
