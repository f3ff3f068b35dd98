"""The agent as a real process: health, readiness, auth, token file, graceful stop, bad config."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.agent_process import DTMA, AgentProcess
from tests.conftest import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def agent(tmp_path: Path, docker_client: Any) -> Any:
    a = AgentProcess(tmp_path / "state", free_port()).start()
    yield a
    a.stop()


def test_health_and_ready_need_no_token(agent: AgentProcess) -> None:
    assert agent.get("/v1/health") == (200, {"status": "ok", "version": "0.1.0"})
    status, body = agent.get("/v1/ready")
    assert (status, body) == (200, {"status": "ready"})


def test_everything_else_needs_the_bearer_token(agent: AgentProcess) -> None:
    status, headers, body = agent.request("GET", "/v1/toolboxes")
    assert status == 401
    assert body["error"]["code"] == "unauthorized"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert agent.request("GET", "/v1/toolboxes", token="wrong-" + "x" * 20)[0] == 401
    assert agent.request("GET", "/v1/no-such-route", token=agent.token)[0] == 404


def test_every_response_carries_a_request_id(agent: AgentProcess) -> None:
    _, headers, _ = agent.request("GET", "/v1/health")
    assert len(headers["X-Request-Id"]) == 16
    _, headers, _ = agent.request("GET", "/v1/health", headers={"X-Request-Id": "abc-123"})
    assert headers["X-Request-Id"] == "abc-123"


def test_token_file_is_generated_private_and_reused(tmp_path: Path, docker_client: Any) -> None:
    a = AgentProcess(tmp_path / "state", free_port()).start()
    try:
        token_file = tmp_path / "state" / "api-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        first = a.token
        assert len(first) >= 32
        assert first not in a.logs()
    finally:
        assert a.stop() == 0
    b = AgentProcess(tmp_path / "state", free_port()).start()
    try:
        assert b.token == first
        assert b.get("/v1/agent", token=first)[0] != 401
    finally:
        b.stop()


def test_sigterm_stops_the_agent_cleanly(agent: AgentProcess) -> None:
    assert agent.stop(signal.SIGTERM) == 0
    assert '"agent_stopped"' in agent.logs()


def _run_bad(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DTMA, "serve"],
        env={**os.environ, "DTMA_STATE_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_bad_listen_address_is_a_clear_error(tmp_path: Path) -> None:
    proc = _run_bad({"DTMA_LISTEN": "nonsense"}, tmp_path)
    assert proc.returncode == 2
    assert "DTMA_LISTEN" in proc.stderr
    assert "HOST:PORT" in proc.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = _run_bad({"DTMA_LISTEN": f"127.0.0.1:{port}"}, tmp_path)
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr


def test_world_readable_token_file_is_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t" * 40)
    token_file.chmod(0o644)
    proc = _run_bad(
        {"DTMA_API_TOKEN_FILE": str(token_file), "DTMA_LISTEN": "127.0.0.1:0"}, tmp_path
    )
    assert proc.returncode == 2
    assert "chmod 600" in proc.stderr
    assert "t" * 40 not in proc.stderr


def test_ready_is_503_while_docker_is_unreachable(tmp_path: Path) -> None:
    a = AgentProcess(
        tmp_path / "state", free_port(), extra_env={"DOCKER_HOST": f"unix://{tmp_path}/nope.sock"}
    ).start(ready=False)
    try:
        status, body = a.get("/v1/ready")
        assert status == 503
        assert body["error"]["code"] == "not_ready"
        assert body["error"]["details"][0]["loc"] == ["docker"]
        assert "nope.sock" in body["error"]["details"][0]["msg"]
    finally:
        a.stop()


def test_an_open_event_stream_does_not_hold_up_shutdown(tmp_path: Path, docker_client: Any) -> None:
    a = AgentProcess(tmp_path / "state", free_port()).start()
    with socket.create_connection(("127.0.0.1", a.port), timeout=10) as sock:
        sock.sendall(
            f"GET /v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {a.token}\r\n\r\n".encode()
        )
        assert b"text/event-stream" in sock.recv(4096)
        t0 = time.monotonic()
        assert a.stop(signal.SIGTERM, timeout=10) == 0
        assert time.monotonic() - t0 < 10
    assert "unhandled_error" not in a.logs()
