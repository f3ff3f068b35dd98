"""Helpers of tests/e2e/test_gateway_access.py: the SDK client with a given token, issuing
tokens, reading the call journal, and running the CLI and the docs' lines."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.agent_process import DTMA, AgentProcess
from tests.engine_fixture import spec as base_spec
from tests.mcp_stream import get_stream as open_get_stream


def spec(*servers: dict[str, Any], **extra: Any) -> str:
    return base_spec(*servers, deadline="90s", **extra)


def apply(agent: AgentProcess, tb: str, body: str) -> dict[str, Any]:
    resp = agent.put_toolbox(tb, body)
    assert resp["phase"] == "healthy", resp
    return resp


@asynccontextmanager
async def mcp_client(
    agent: AgentProcess, tb: str, token: str, statuses: list[int] | None = None
) -> AsyncIterator[Client]:
    """The SDK's client; `statuses` collects the HTTP status of every answer."""

    async def seen(response: httpx2.Response) -> None:
        if statuses is not None:
            statuses.append(response.status_code)

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx2.Timeout(30),
        event_hooks={"response": [seen]},
    )
    url = f"{agent.base_url}/v1/toolboxes/{tb}/mcp"
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        yield client


def issue(agent: AgentProcess, tb: str, name: str | None = None) -> dict[str, Any]:
    body = {"name": name} if name else {}
    status, _, created = agent.request(
        "POST", f"/v1/toolboxes/{tb}/tokens", token=agent.token, body=body
    )
    assert status == 201, created
    return dict(created)


def all_calls(agent: AgentProcess, tb: str, limit: int = 1000) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    since = 0
    while True:
        status, page = agent.get(
            f"/v1/toolboxes/{tb}/calls?since={since}&limit={limit}", agent.token
        )
        assert status == 200, page
        items += page["items"]
        if len(page["items"]) < limit:
            return items
        since = page["next"]


def state_bytes(agent: AgentProcess) -> bytes:
    """Every file of the state dir (the DB, its WAL, the agent's log)."""
    return b"".join(p.read_bytes() for p in agent.state_dir.rglob("*") if p.is_file())


def cli(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DTMA_URL": agent.base_url, "DTMA_API_TOKEN": agent.token}
    return subprocess.run([DTMA, *args], env=env, capture_output=True, text=True, timeout=60)


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            total += float(m.group(2))
    return total


def run_doc_line(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", line],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@asynccontextmanager
async def get_stream(agent: AgentProcess, tb: str, token: str) -> AsyncIterator[httpx2.Response]:
    """A handshake-era session opened with `token` and its GET stream, open."""
    url = f"{agent.base_url}/v1/toolboxes/{tb}/mcp"
    async with open_get_stream(url, {"Authorization": f"Bearer {token}"}) as stream:
        yield stream


def revoke(agent: AgentProcess, tb: str, token_id: str) -> tuple[int, Any]:
    status, _, body = agent.request(
        "DELETE", f"/v1/toolboxes/{tb}/tokens/{token_id}", token=agent.token
    )
    return status, body
