"""scripts/ensure-docker: a no-op when the engine answers; a clear message when it cannot help."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration
SCRIPT = str(REPO / "scripts/ensure-docker")


def test_is_a_quiet_no_op_when_the_engine_answers(docker_client: Any) -> None:
    t0 = time.monotonic()
    proc = subprocess.run([SCRIPT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout == ""
    assert proc.stderr == ""
    assert time.monotonic() - t0 < 10
    again = subprocess.run([SCRIPT], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0


def test_names_the_problem_when_docker_host_points_nowhere(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/missing.sock"}
    proc = subprocess.run([SCRIPT], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1
    assert f"DOCKER_HOST=unix://{tmp_path}/missing.sock" in proc.stderr
    assert "unset DOCKER_HOST" in proc.stderr


def test_non_root_user_gets_instructions_not_an_install(docker_client: Any) -> None:
    """As an unprivileged user the engine's socket is unreadable and apt is off-limits."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    # A copy the unprivileged user can read: the clone may live in a private (0700) directory.
    readable = Path(tempfile.mkdtemp(prefix="dtma-ensure-docker-"))
    readable.chmod(0o755)
    script = readable / "ensure-docker"
    shutil.copy(SCRIPT, script)
    script.chmod(0o755)
    try:
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**env, "HOME": "/tmp"},
        )
    finally:
        shutil.rmtree(readable)
    assert proc.returncode == 1
    assert "only install one as root on Debian/Ubuntu" in proc.stderr
    assert "docker' group" in proc.stderr
