"""The dtma/agent image runs the agent, which reaches the host's engine through its socket."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_agent_image_serves_health_and_ready(agent_image: str, make_container: Any) -> None:
    c = make_container(
        agent_image,
        ports={"8750/tcp": ("127.0.0.1", None)},
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"}},
    )
    wait_until(lambda: c.reload() or c.ports.get("8750/tcp"), 30, "published port")
    port = c.ports["8750/tcp"][0]["HostPort"]
    status, body = wait_until(lambda: _get(f"http://127.0.0.1:{port}/v1/health"), 30, "health")
    assert (status, body["status"]) == (200, "ok")
    status, body = wait_until(
        lambda: (r := _get(f"http://127.0.0.1:{port}/v1/ready"))[0] == 200 and r, 30, "ready"
    )
    assert body == {"status": "ready"}
    logs = c.logs().decode()
    assert '"event": "agent_started"' in logs
