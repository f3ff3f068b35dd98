"""The test servers' "serving on" line (images/mcp-notes, images/mcp-kit over HTTP) is printed
once their port accepts connections: tests wait for that line and then connect at once. Printed
before uvicorn bound its socket, a loaded machine refused such a connection now and then (a
hang_initialize probe read `connect_failed` in CI)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.conftest import REPO, die_with_parent, free_port

SERVERS = {
    "mcp-notes": REPO / "images/mcp-notes/mcp_notes.py",
    "mcp-kit": REPO / "images/mcp-kit/mcp_kit.py",
}


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_the_port_accepts_once_serving_on_is_printed(name: str) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(SERVERS[name])],
        env={**os.environ, "PORT": str(port), "FAIL_MODE": "hang_initialize"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    try:
        assert server.stderr is not None
        for line in server.stderr:
            if b"serving on" in line:
                break
        else:
            pytest.fail(f"{name} ended without serving: {server.wait()}")
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # refused (ConnectionRefusedError) if the line came before the socket
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)
        if server.stderr is not None:
            server.stderr.close()
