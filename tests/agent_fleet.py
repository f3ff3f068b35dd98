"""N real `dtma serve` processes on the one Docker engine, started concurrently, and the
fleet.yaml that lists them. Each agent has its own state dir, port, agent id and subnet pool
(a /22 of 10.214.0.0/16, so N <= 64), so they never see, let alone reap, each other's
containers. Everything is stopped by PID and its toolboxes removed by label afterwards."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import docker.errors
import yaml

from tests.agent_process import AgentProcess
from tests.conftest import free_port

MAX_AGENTS = 64


def agent_name(i: int) -> str:
    return f"agent-{i:02d}"


def write_fleet_file(
    path: Path,
    agents: list[AgentProcess],
    labels: Callable[[int], dict[str, str]] = lambda i: {},
    *,
    token_files: bool = True,
) -> Path:
    """fleet.yaml for these agents, in order; tokens as token_file (the agents' own api-token
    files, relative to nothing: absolute) or inline."""
    entries: list[dict[str, Any]] = []
    for i, agent in enumerate(agents):
        entry: dict[str, Any] = {"name": agent_name(i), "url": agent.base_url}
        if token_files:
            entry["token_file"] = str(agent.state_dir / "api-token")
        else:
            entry["token"] = agent.token
        if labels(i):
            entry["labels"] = labels(i)
        entries.append(entry)
    path.write_text(yaml.safe_dump({"agents": entries}, sort_keys=False))
    return path


@contextmanager
def running_fleet(
    root: Path, count: int, docker_client: Any, *, starters: int = 8, **env: str
) -> Iterator[list[AgentProcess]]:
    """`count` started agents (ready), `starters` starting at once; stopped and cleaned after
    (by PID, stopped from a thread pool: stopping is only waiting)."""
    assert 0 < count <= MAX_AGENTS
    run = secrets.token_hex(3)
    agents = [
        AgentProcess(
            root / agent_name(i),
            free_port(),
            extra_env={
                "DTMA_AGENT_ID": f"fleet-{run}-{i:02d}",
                "DTMA_SUBNET_POOL": f"10.214.{4 * i}.0/22",
                "DTMA_REAP_GRACE": "24h",  # other test runs share this engine
                **env,
            },
        )
        for i in range(count)
    ]
    try:
        for i in range(0, count, starters):
            start_together(agents[i : i + starters])
        yield agents
    finally:
        with ThreadPoolExecutor(starters) as pool:
            list(pool.map(stop_quietly, agents))
        for agent in agents:
            _remove_agent_objects(docker_client, agent.extra_env["DTMA_AGENT_ID"])


def start_together(agents: list[AgentProcess], wait: float = 180) -> list[float]:
    """Start these agents at once and wait until every one is ready; each one's ready time
    (`time.time()`, as first seen), in order. The processes are spawned from this (the main)
    thread: PR_SET_PDEATHSIG (die_with_parent) fires when the spawning *thread* ends, so an
    agent started from a pool thread would get SIGTERM."""
    for agent in agents:
        agent.start(probe=False)
    ready_at = [0.0] * len(agents)
    pending = set(range(len(agents)))
    deadline = time.monotonic() + wait
    while pending:
        for i in sorted(pending):
            proc = agents[i].proc
            assert proc is not None
            if proc.poll() is not None:
                logs = agents[i].logs()[-3000:]
                raise RuntimeError(f"agent exited with {proc.returncode}:\n{logs}")
            with suppress(OSError):
                if agents[i].get("/v1/ready")[0] == 200:
                    ready_at[i] = time.time()
                    pending.discard(i)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} agents not ready within {wait}s")
        time.sleep(0.2)
    return ready_at


def stop_quietly(agent: AgentProcess) -> None:
    # stop() SIGKILLs a hung agent and then raises; the sweep below runs either way.
    with suppress(subprocess.TimeoutExpired):
        agent.stop()


def _remove_agent_objects(client: Any, agent_id: str) -> None:
    """Every container and network of this agent id (whatever toolbox a test gave it)."""
    flt = {"label": f"dtma.agent={agent_id}"}
    for c in client.containers.list(all=True, filters=flt):
        with suppress(docker.errors.APIError):  # already gone
            c.remove(force=True, v=True)
    for n in client.networks.list(filters=flt):
        with suppress(docker.errors.APIError):  # already gone
            n.remove()
