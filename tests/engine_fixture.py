"""An in-process Agent on the real Docker engine, plus spec builders with short timings."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from dtma.adapters.docker_engine import DockerEngine
from dtma.adapters.docker_runtime import DockerRuntime
from dtma.adapters.secret_files import SecretFileStore
from dtma.adapters.sqlite_store import SqliteStateStore
from dtma.adapters.state_repo import StateRepository
from dtma.adapters.vault import VaultClient
from dtma.bootstrap import build_agent
from dtma.domain.containers import LABEL_TOOLBOX, ObservedContainer
from dtma.domain.records import EventRecord, OperationRecord
from dtma.engine.agent import Agent
from dtma.engine.secrets import SecretInjector
from dtma.observability.redaction import REDACTOR, Redactor
from dtma.spec.validate import SpecPolicy
from tests.conftest import SHARED_CORES

# A Python MCP server's first answer can wait seconds for a core when two xdist workers start
# containers at once (tests/conftest.SHARED_CORES): the bounds give it that time there.
PROBE_TIMEOUT = "6s" if SHARED_CORES else "3s"
DEADLINE = "40s" if SHARED_CORES else "20s"
MCP_TIME = "dtma-examples/mcp-time:latest"
MCP_NOTES = "dtma-examples/mcp-notes:latest"
TIME_TOOLS = ["get_current_time", "convert_time"]
NOTES_TOOLS = ["add_note", "list_notes", "get_note", "delete_note", "search_notes"]


def new_toolbox_id() -> str:
    return "t-" + secrets.token_hex(4)


MCP_KIT = "dtma-examples/mcp-kit:latest"


def time_server(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": MCP_TIME,
        "transport": "stdio",
        "health": {"expect_tools": TIME_TOOLS, "interval": "1s", "timeout": PROBE_TIMEOUT},
        **extra,
    }


def kit_server(name: str, transport: str, tool_set: str) -> dict[str, Any]:
    """An mcp-kit server (images/mcp-kit) with `TOOL_SET=tool_set`, over stdio or HTTP."""
    server: dict[str, Any] = {
        "name": name,
        "image": MCP_KIT,
        "env": {"TOOL_SET": tool_set},
        "health": {"interval": "1s", "timeout": PROBE_TIMEOUT},
    }
    if transport == "stdio":
        server["transport"] = "stdio"
        server["env"]["MCP_TRANSPORT"] = "stdio"
    else:
        server.update(transport="streamable-http", port=8000, path="/mcp")
    return server


def notes_server(name: str, fail_mode: str = "", **extra: Any) -> dict[str, Any]:
    server: dict[str, Any] = {
        "name": name,
        "image": MCP_NOTES,
        "transport": "streamable-http",
        "port": 8000,
        "path": "/mcp",
        "health": {"expect_tools": NOTES_TOOLS, "interval": "1s", "timeout": PROBE_TIMEOUT},
    }
    if fail_mode:
        server["env"] = {"FAIL_MODE": fail_mode}
    return {**server, **extra}


def spec(
    *servers: dict[str, Any],
    order: str = "start_first",
    min_healthy: str = "1s",
    deadline: str = DEADLINE,
    restart: dict[str, Any] | None = None,
    **extra: Any,
) -> str:
    body: dict[str, Any] = {
        "servers": list(servers),
        "rollout": {"order": order, "min_healthy_time": min_healthy, "healthy_deadline": deadline},
        **extra,
    }
    if restart:
        body["restart"] = restart
    return json.dumps(body)


@dataclass
class EngineHarness:
    agent: Agent
    runtime: DockerRuntime
    repo: StateRepository
    docker_client: Any

    async def apply_and_wait(self, toolbox: str, body: str, timeout: float = 90) -> OperationRecord:
        result = await self.agent.apply(toolbox, body)
        assert result.operation is not None, "expected a rollout, got a no-op"
        return await self.wait(result.operation, timeout)

    async def wait(self, op_id: str, timeout: float = 90) -> OperationRecord:
        op = await self.agent.wait(op_id, timeout)
        assert op.state != "running", f"operation {op_id} still running after {timeout}s"
        return op

    async def containers(self, toolbox: str) -> list[ObservedContainer]:
        return await self.runtime.list_managed(toolbox)

    async def events(self, toolbox: str) -> list[EventRecord]:
        return await self.repo.events(0, toolbox, limit=1000)


async def engine_harness(
    state_dir: Path,
    reap_grace: float = 60,
    vault: VaultClient | None = None,
    secrets_dir: Path | None = None,
    redactor: Redactor = REDACTOR,
    agent_id: str | None = None,
    hold_orphans: bool = False,
    max_starts: int | None = None,
    relist_interval: float = 2,
) -> AsyncIterator[EngineHarness]:
    """The production wiring (bootstrap.build_agent) with a fast re-list and a short pull.

    Each harness has its own agent id (random unless given), so it never sees, let alone
    reaps, another test's containers.

    With `vault`, secrets are injected for real: the agent mounts a tmpfs on `secrets_dir`
    (unmounted again at the end).
    """
    store = SqliteStateStore.in_state_dir(state_dir)
    await store.open()
    engine = DockerEngine(None)
    injector = None
    if vault is not None:
        assert secrets_dir is not None
        files = SecretFileStore(secrets_dir, allow_disk=False)
        await files.prepare()
        assert files.unavailable is None, files.unavailable
        injector = SecretInjector(vault, files, redactor, b"k" * 32)
    agent = build_agent(
        engine,
        store,
        policy=SpecPolicy(vault_configured=vault is not None),
        reap_grace=reap_grace,
        relist_interval=relist_interval,
        pull_timeout=20,
        secrets=injector,
        agent_id=agent_id or "test-" + secrets.token_hex(4),
        hold_orphans=hold_orphans,
        max_starts=max_starts,
    )
    runtime, repo = agent.runtime, agent.repo
    assert isinstance(runtime, DockerRuntime)
    await agent.start()
    client = await asyncio.to_thread(docker.from_env)
    toolboxes: set[str] = set()
    try:
        yield EngineHarness(agent, runtime, repo, client)
    finally:
        await agent.stop()
        for record in await repo.toolboxes():
            toolboxes.add(record.id)
        await asyncio.to_thread(remove_toolboxes, client, toolboxes)
        await asyncio.to_thread(client.close)
        await engine.close()
        await store.close()
        if injector is not None and secrets_dir is not None:
            await asyncio.to_thread(
                subprocess.run, ["umount", "-l", str(secrets_dir)], check=False, capture_output=True
            )


def remove_toolboxes(client: Any, toolboxes: Iterable[str]) -> None:
    """Remove every container and network labelled with one of these toolbox ids. Blocking."""
    for tb in toolboxes:
        for c in client.containers.list(all=True, filters={"label": f"{LABEL_TOOLBOX}={tb}"}):
            _gone_is_fine(lambda c=c: c.remove(force=True, v=True))
        for n in client.networks.list(filters={"label": f"{LABEL_TOOLBOX}={tb}"}):
            _gone_is_fine(n.remove)


def _gone_is_fine(remove: Callable[[], Any]) -> None:
    """Another cleanup (two agents with one toolbox id) may have got there first."""
    try:
        remove()
    except docker.errors.APIError as exc:
        if exc.status_code not in (404, 409):
            raise
