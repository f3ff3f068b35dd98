"""`make run`'s runner: agent + dev OpenBao with a demo secret; SIGINT stops all it started."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import hvac
import pytest

from tests.conftest import REPO, die_with_parent, free_port, wait_until

pytestmark = pytest.mark.e2e


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _spawn(env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    """run_dev.py in its own session, as a terminal's foreground job would be."""
    with out.open("wb") as f:
        return subprocess.Popen(
            [sys.executable, str(REPO / "scripts/run_dev.py")],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_run_dev_starts_agent_and_openbao_and_ctrl_c_stops_both(
    tmp_path: Path, docker_client: Any
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update(
        DTMA_LISTEN=f"127.0.0.1:{port}",
        DTMA_STATE_DIR=str(tmp_path / "state"),
        DTMA_LOG_FORMAT="json",
    )
    out = tmp_path / "out.log"
    proc = _spawn(env, out)
    try:
        wait_until(lambda: "Ctrl-C stops" in out.read_text(), 60, "run-dev banner")
        text = out.read_text()
        token_file = tmp_path / "state" / "api-token"
        assert f"API token: {token_file}" in text
        assert (
            f'curl -H "Authorization: Bearer $(cat {token_file})" http://127.0.0.1:{port}' in text
        )
        pids = [int(p) for p in re.findall(r"\(pid (\d+)", text)]
        assert len(pids) == 2
        assert all(_alive(p) for p in pids)

        creds = dict(
            re.findall(r"export (\w+)=(\S+)", (tmp_path / "state/dev-vault.env").read_text())
        )
        assert (tmp_path / "state/dev-vault.env").stat().st_mode & 0o077 == 0
        vault = hvac.Client(url=creds["VAULT_ADDR"], token=creds["VAULT_TOKEN"])
        demo = vault.secrets.kv.v2.read_secret_version(
            path="dtma/demo/notes", mount_point="secret", raise_on_deleted_version=True
        )
        assert demo["data"]["data"]["api_key"].startswith("demo-")
        assert creds["VAULT_TOKEN"] not in text  # the root token is not printed

        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
        assert proc.wait(30) == 0
        wait_until(lambda: not any(_alive(p) for p in pids), 10, "children gone")
        final = out.read_text()
        assert "stopped agent" in final
        assert "stopped openbao" in final
    finally:
        _kill_group(proc)


def test_run_dev_uses_an_existing_vault_and_starts_no_openbao(
    tmp_path: Path, docker_client: Any
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DTMA_LISTEN": f"127.0.0.1:{port}",
        "DTMA_STATE_DIR": str(tmp_path / "state"),
        "VAULT_ADDR": "http://127.0.0.1:1",
    }
    out = tmp_path / "out.log"
    proc = _spawn(env, out)
    try:
        wait_until(lambda: "Ctrl-C stops" in out.read_text(), 60, "run-dev banner")
        text = out.read_text()
        assert "using Vault at http://127.0.0.1:1" in text
        assert "dev OpenBao" not in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        _kill_group(proc)
