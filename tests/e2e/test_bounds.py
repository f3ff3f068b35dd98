"""Bounds on a live agent process: the cap on live event streams (429 beyond it, a slot frees
when a stream ends) and the retention loop pruning the state DB while the agent runs."""

from __future__ import annotations

import socket
import sqlite3
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.agent_process import running_agent
from tests.conftest import wait_until

pytestmark = pytest.mark.e2e

# A day of reap grace: these agents must not touch anyone else's containers.
BASE_ENV = {"DTMA_REAP_GRACE": "24h"}


def _open_stream(port: int, token: str) -> socket.socket:
    """A live event stream; fails the test unless it is answered 200."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    with ExitStack() as on_error:
        on_error.callback(sock.close)
        sock.sendall(
            f"GET /v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200"), head
        on_error.pop_all()
    return sock


def test_live_streams_beyond_the_cap_get_a_429_with_the_error_shape(
    tmp_path: Path, docker_client: Any
) -> None:
    with (
        running_agent(
            tmp_path / "state", docker_client, DTMA_SSE_MAX_SUBSCRIBERS="2", **BASE_ENV
        ) as agent,
        ExitStack() as streams,
    ):
        first = streams.enter_context(_open_stream(agent.port, agent.token))
        streams.enter_context(_open_stream(agent.port, agent.token))
        headers = {"Accept": "text/event-stream"}
        status, _, body = agent.request("GET", "/v1/events", token=agent.token, headers=headers)
        assert status == 429
        assert body["error"]["code"] == "too_many_requests"
        assert "DTMA_SSE_MAX_SUBSCRIBERS" in body["error"]["message"]
        assert body["error"]["details"] == []
        # Polling is not a live stream: it still answers.
        assert agent.get("/v1/events?limit=5", agent.token)[0] == 200
        first.close()  # a client that leaves frees its slot within a couple of seconds
        t0 = time.monotonic()

        def third_stream_opens() -> bool:
            with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as sock:
                sock.sendall(
                    f"GET /v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
                    f"Authorization: Bearer {agent.token}\r\n\r\n".encode()
                )
                return sock.recv(4096).startswith(b"HTTP/1.1 200")

        wait_until(third_stream_opens, 10, "a slot to free after a client left")
        assert time.monotonic() - t0 < 5
        assert "unhandled_error" not in agent.logs()


def _seed(db: Path, events: int, operations: int, age_s: float) -> None:
    """Old rows written straight into the agent's state DB while it is stopped."""
    ts = time.time() - age_s
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO events (ts, kind, message) VALUES (?, 'seeded', 'x')",
            [(ts,) for _ in range(events)],
        )
        conn.executemany(
            "INSERT INTO operations (id, kind, toolbox, state, created_at, updated_at) "
            "VALUES (?, 'apply', 'gone', ?, ?, ?)",
            [
                (f"op-seed-{i}", "running" if i == 0 else "succeeded", ts, ts)
                for i in range(operations)
            ],
        )


def test_the_agent_prunes_old_and_surplus_rows_periodically(
    tmp_path: Path, docker_client: Any
) -> None:
    state = tmp_path / "state"
    with running_agent(state, docker_client, **BASE_ENV):
        pass  # creates the state DB at the current schema
    _seed(state / "state.db", events=500, operations=150, age_s=8 * 86400)
    _seed(state / "state.db", events=400, operations=0, age_s=60)
    env = {
        **BASE_ENV,
        "DTMA_PRUNE_INTERVAL": "1s",
        "DTMA_RETAIN_EVENTS": "300",
        "DTMA_RETAIN_OPERATIONS": "100",
    }
    with running_agent(state, docker_client, **env) as agent:

        def pruned() -> bool:
            _, page = agent.get("/v1/events?limit=1000", agent.token)
            return len(page["items"]) <= 300

        wait_until(pruned, 30, "the retention loop to prune the events")
        _, page = agent.get("/v1/events?limit=1000", agent.token)
        kinds = [e["kind"] for e in page["items"]]
        assert kinds.count("seeded") <= 300  # the 500 week-old ones went first
        assert page["items"][-1]["cursor"] >= 900  # the newest stay
        # The seeded running operation was finished at start, so it is young: it stays.
        assert agent.get("/v1/operations/op-seed-0", agent.token)[0] == 200
        assert agent.get("/v1/operations/op-seed-1", agent.token)[0] == 404
        assert '"event": "state_pruned"' in agent.logs()
