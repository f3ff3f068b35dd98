"""The daemon-restart scenario of issue 19, shared by test_engine_faults.py (containers stop) and
test_engine_faults_live_restore.py (they keep running). Two files so that pytest-xdist's
`--dist loadfile` can run the two long cases on different workers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.agent_process import AgentProcess
from tests.conftest import free_port
from tests.e2e.access_support import mcp_client
from tests.engine_fixture import MCP_NOTES, MCP_TIME, notes_server, spec, time_server
from tests.own_dockerd import OwnDockerd, can_run_own_dockerd

TOOLBOXES = 20
RESTARTS = 6
HTTP_EVERY = 4  # every 4th toolbox also has an mcp-notes server (streamable HTTP)
BACK_WITHIN_S = 180.0


def _spec(i: int, note: str = "") -> str:
    servers = [time_server("time", env={"TZ": "UTC", "NOTE": note or "first"})]
    if i % HTTP_EVERY == 0:
        servers.append(notes_server("notes"))
    return spec(*servers, deadline="60s")


@contextmanager
def own_engine(live: bool, tmp_path: Path) -> Iterator[OwnDockerd]:
    why = can_run_own_dockerd()
    if why:
        pytest.skip(why)
    engine = OwnDockerd(live_restore=live, pool="10.220.0.0/16" if live else "10.219.0.0/16")
    try:
        engine.start()
        engine.load_images(MCP_TIME, MCP_NOTES)
        yield engine
    finally:
        engine.destroy(keep_log=tmp_path / "dockerd.log")


@contextmanager
def agent_on(own_engine: OwnDockerd, tmp_path: Path) -> Iterator[AgentProcess]:
    proc = AgentProcess(
        tmp_path / "state",
        free_port(),
        extra_env={
            "DOCKER_HOST": own_engine.host,
            # A pool of its own: no route on the host may overlap another agent's networks.
            "DTMA_SUBNET_POOL": own_engine.pool,
            "DTMA_AGENT_CONTAINER": "none",
        },
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


def _call(agent: AgentProcess, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    status, _, body = agent.request(method, path, token=agent.token, **kw)
    return status, body


def _statuses(agent: AgentProcess) -> dict[str, dict[str, Any]]:
    code, body = _call(agent, "GET", "/v1/toolboxes")
    assert code == 200, body
    return {item["id"]: item for item in body["items"]}


def _all_back(agent: AgentProcess, toolboxes: list[str], revisions: dict[str, int]) -> bool:
    if agent.get("/v1/ready")[0] != 200:
        return False
    statuses = _statuses(agent)
    for tb in toolboxes:
        st = statuses.get(tb)
        if st is None or st["phase"] != "healthy" or st["revision"] != revisions[tb]:
            return False
        if any(
            (s["state"], s["health"], s["revision"]) != ("running", "healthy", revisions[tb])
            for s in st["servers"]
        ):
            return False
    return True


def _wait(
    predicate: Any, within: float, what: str, engine: OwnDockerd, agent: AgentProcess
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(
        f"{what} not within {within:g}s (daemon restart {engine.restarts})\n"
        f"--- agent log ---\n{agent.logs()[-6000:]}\n--- dockerd ---\n{engine.log_tail()}"
    )


def _cursor(agent: AgentProcess) -> int:
    """The journal's newest cursor now."""
    since = 0
    while True:
        page = _call(agent, "GET", f"/v1/events?since={since}&limit=1000")[1]
        if not page["items"]:
            return since
        since = page["items"][-1]["cursor"]


def _reconciled_since(agent: AgentProcess, since: int) -> set[str]:
    """The toolboxes with a `toolbox_reconciled` event after cursor `since`."""
    done: set[str] = set()
    while True:
        page = _call(agent, "GET", f"/v1/events?since={since}&limit=1000")[1]
        if not page["items"]:
            return done
        done |= {e["toolbox"] for e in page["items"] if e["kind"] == "toolbox_reconciled"}
        since = page["items"][-1]["cursor"]


def _restarts(statuses: dict[str, dict[str, Any]]) -> dict[tuple[str, str], int]:
    return {(tb, s["name"]): s["restarts"] for tb, st in statuses.items() for s in st["servers"]}


def _engine_holds(engine: OwnDockerd) -> tuple[list[dict[str, str]], list[str]]:
    """(running and stopped containers as {toolbox, server, state}, networks) of the daemon."""
    fmt = '{{.Label "dtma.toolbox"}} {{.Label "dtma.server"}} {{.State}}'
    out = engine.docker("ps", "-a", "--format", fmt).stdout.split("\n")
    containers = [
        dict(zip(("toolbox", "server", "state"), line.split(), strict=True)) for line in out if line
    ]
    nets = engine.docker("network", "ls", "--filter", "label=dtma.toolbox", "--format", "{{.Name}}")
    return containers, nets.stdout.split()


async def _call_every_toolbox(agent: AgentProcess, toolboxes: list[str]) -> list[str]:
    """A tools/call through each toolbox's endpoint (8 at a time); returns the failures."""
    gate = asyncio.Semaphore(8)

    async def one(tb: str) -> str | None:
        async with gate:
            try:
                async with asyncio.timeout(60), mcp_client(agent, tb, agent.token) as client:
                    result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
                    return f"{tb}: tool error {result}" if result.is_error else None
            except Exception as exc:  # every failure is reported, none hangs (the timeout)
                return f"{tb}: {type(exc).__name__}: {exc}"

    return [f for f in await asyncio.gather(*(one(tb) for tb in toolboxes)) if f]


def six_daemon_restarts(own_engine: OwnDockerd, agent: AgentProcess) -> None:
    """Twenty toolboxes, then six restarts of the test's own daemon, checked after each one."""
    live = own_engine.live_restore
    toolboxes = [f"df{i:02d}" for i in range(TOOLBOXES)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda i: agent.put_toolbox(toolboxes[i], _spec(i)), range(TOOLBOXES))
        )
    assert all(a["phase"] == "healthy" for a in answers), [a["phase"] for a in answers]
    revisions = {tb: 1 for tb in toolboxes}
    servers = sum(2 if i % HTTP_EVERY == 0 else 1 for i in range(TOOLBOXES))
    before = _restarts(_statuses(agent))
    for n in range(1, RESTARTS + 1):
        mark = _cursor(agent)
        own_engine.stop()
        _wait(lambda: agent.get("/v1/ready")[0] == 503, 15, "ready 503", own_engine, agent)
        _, ready = agent.get("/v1/ready")
        assert "docker" in json.dumps(ready), ready
        if n == 1:
            status, body = _call(
                agent, "PUT", f"/v1/toolboxes/{toolboxes[0]}", raw=_spec(0, "second").encode()
            )
            assert status == 503, body
            assert "recorded and runs once the engine is back" in body["error"]["message"], body
            revisions[toolboxes[0]] = 2
        own_engine.start()
        # Statuses may read healthy before the engine's return is even noticed: wait for every
        # toolbox's reconcile of this restart first.
        _wait(
            lambda mark=mark: _reconciled_since(agent, mark) >= set(toolboxes),
            BACK_WITHIN_S,
            "every toolbox reconciled",
            own_engine,
            agent,
        )
        _wait(
            lambda: _all_back(agent, toolboxes, revisions),
            BACK_WITHIN_S,
            "every toolbox back",
            own_engine,
            agent,
        )
        containers, networks = _engine_holds(own_engine)
        assert len(containers) == servers, containers  # one per server, nothing left over
        assert all(c["state"] == "running" for c in containers), containers
        assert len(networks) == TOOLBOXES, networks  # no orphan network
        failures = asyncio.run(_call_every_toolbox(agent, toolboxes))
        assert failures == [], failures
        statuses = _statuses(agent)
        after = _restarts(statuses)
        for key, count in after.items():
            if key in before:
                assert count - before[key] <= (0 if live else 1), (key, before[key], count)
        before = after
    metrics = agent.request("GET", "/metrics", token=agent.token)[2]
    outages = [
        line for line in str(metrics).splitlines() if line.startswith("dtma_engine_outages_total ")
    ]
    assert outages, metrics
    assert float(outages[0].split()[1]) >= RESTARTS, outages
