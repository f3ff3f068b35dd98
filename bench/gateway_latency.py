"""The toolbox MCP endpoint's cost: a tools/call through it vs the same call made directly.

Usage: .venv/bin/python bench/gateway_latency.py [--calls N] [--warmup W] [--clients K]
                                                 [--seconds S] [--mode auto|legacy]
Needs the example images (scripts/build-images mcp-time mcp-notes). Starts its own agent (free
loopback port, private state dir, DTMA_REAP_GRACE=24h) with one toolbox: an mcp-notes HTTP
server published on a loopback port and an mcp-time stdio server, each allowed 2 CPUs (the
default limit, 0.5, would measure the quota). Then, in one run:

1. latency: one SDK client session on the endpoint, one on the notes server's published port
   and one on a bare forwarder to that port (bench/floor_forwarder.py: aiohttp and dtma's HTTP
   client relaying bytes, nothing else: the floor under any aiohttp relay here), each held
   open; `list_notes` called N times sequentially on each, in rotating blocks of BLOCK calls so
   that all see the same machine load; W warm-up calls each first, not counted. Prints median
   and p99 of each and what the endpoint and the floor add to the direct median.
2. throughput: K SDK client sessions on the endpoint call the stdio server's
   `get_current_time` back to back for S seconds (after a warm-up); prints calls/s. Then the
   same with K clients that post one SDK-built 2026-07-28 request again and again over aiohttp
   (an SDK client costs about as much CPU per call as the agent and the server together, and
   they share the same 2 cores: this shows what the endpoint sustains when its clients are
   elsewhere).

With every figure it prints the load average and the agent's CPU time per call, which is less
sensitive to the other work on a shared machine than wall time. It deletes what it created.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

DTMA = str(Path(sys.executable).parent / "dtma")
BLOCK = 50
TOOLBOX = "bench-gateway"
SPEC = {
    "servers": [
        {
            "name": "notes",
            "image": "dtma-examples/mcp-notes:latest",
            "transport": "streamable-http",
            "port": 8000,
            "publish": "127.0.0.1:0",
            "health": {"expect_tools": ["list_notes"]},
            "resources": {"cpus": 2},  # not the default 0.5: measure the endpoint, not a quota
        },
        {
            "name": "time",
            "image": "dtma-examples/mcp-time:latest",
            "health": {"expect_tools": ["get_current_time"]},
            "resources": {"cpus": 2},
        },
    ],
    "rollout": {"min_healthy_time": "1s"},
    "network": {"egress": True},  # Docker publishes no port from an internal network
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(base: str, token: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(  # noqa: S310 - loopback
        base + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=300) as resp:  # noqa: S310
        return json.loads(resp.read())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def container_cpu(container_id: str) -> float | None:
    """CPU seconds a container has used (cgroup v1 cpuacct, as on this project's machines);
    None where that file is not found."""
    path = Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage")
    return int(path.read_text()) / 1e9 if path.exists() else None


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


@asynccontextmanager
async def session(url: str, token: str | None, mode: str) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30)) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,  # type: ignore[arg-type]
    ):
        yield client


async def timed(client: Client, tool: str, args: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    result = await client.call_tool(tool, args)
    elapsed = (time.perf_counter() - t0) * 1000
    if result.is_error:
        raise RuntimeError(f"{tool} failed: {result}")
    return elapsed


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


@asynccontextmanager
async def floor_forwarder(direct: str) -> AsyncIterator[tuple[str, int]]:
    """bench/floor_forwarder.py in its own process, relaying to `direct`: (its URL, its pid)."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("floor_forwarder.py")),
        str(port),
        direct,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), 30)
        yield f"http://127.0.0.1:{port}{urllib.parse.urlsplit(direct).path}", proc.pid
    finally:
        proc.terminate()
        await proc.wait()


async def latency(
    endpoint: str, direct: str, token: str, args: argparse.Namespace, agent_pid: int
) -> None:
    via: list[float] = []
    straight: list[float] = []
    floor: list[float] = []
    async with (
        floor_forwarder(direct) as (floor_url, floor_pid),
        session(endpoint, token, args.mode) as gw,
        session(direct, None, args.mode) as dc,
        session(floor_url, None, args.mode) as fl,
    ):
        for _ in range(args.warmup):
            await timed(gw, "notes__list_notes", {})
            await timed(dc, "list_notes", {})
            await timed(fl, "list_notes", {})
        before, cpu0 = load(), cpu_seconds(agent_pid)
        cpu_gw = cpu_fl = 0.0
        while len(via) < args.calls:
            c0 = cpu_seconds(agent_pid)
            for _ in range(BLOCK):
                via.append(await timed(gw, "notes__list_notes", {}))
            cpu_gw += cpu_seconds(agent_pid) - c0
            for _ in range(BLOCK):
                straight.append(await timed(dc, "list_notes", {}))
            c0 = cpu_seconds(floor_pid)
            for _ in range(BLOCK):
                floor.append(await timed(fl, "list_notes", {}))
            cpu_fl += cpu_seconds(floor_pid) - c0
        cpu_all = cpu_seconds(agent_pid) - cpu0
    m_via, m_dir, m_fl = (statistics.median(x) for x in (via, straight, floor))
    print(f"latency: tools/call list_notes, {len(via)} calls each, sequential, one session each")
    print(f"  {'':<34}{'median ms':>10}{'p99 ms':>9}")
    print(f"  {'direct (published port)':<34}{m_dir:>10.2f}{p99(straight):>9.2f}")
    print(f"  {'through the endpoint':<34}{m_via:>10.2f}{p99(via):>9.2f}")
    print(f"  {'through a bare forwarder (floor)':<34}{m_fl:>10.2f}{p99(floor):>9.2f}")
    print(
        f"  endpoint adds {m_via - m_dir:.2f} ms to the median (ratio {m_via / m_dir:.2f}); "
        f"agent CPU {cpu_gw / len(via) * 1000:.2f} ms per endpoint call "
        f"({(cpu_all - cpu_gw) / len(straight) * 1000:.2f} ms per direct call, idle work); "
        f"load {before} -> {load()}"
    )
    print(
        f"  the floor adds {m_fl - m_dir:.2f} ms to the median; forwarder CPU "
        f"{cpu_fl / len(floor) * 1000:.2f} ms per call"
    )


def replayed_call(token: str) -> tuple[bytes, dict[str, str]]:
    """One 2026-07-28 tools/call as the SDK's client sends it (built with the SDK's types and
    header names), to be posted again and again by a client that does nothing else."""
    from mcp.shared.inbound import MCP_METHOD_HEADER, MCP_NAME_HEADER, MCP_PROTOCOL_VERSION_HEADER
    from mcp_types import (
        CLIENT_CAPABILITIES_META_KEY,
        CLIENT_INFO_META_KEY,
        PROTOCOL_VERSION_META_KEY,
        JSONRPCRequest,
    )

    version, name = "2026-07-28", "time__get_current_time"
    meta = {
        PROTOCOL_VERSION_META_KEY: version,
        CLIENT_CAPABILITIES_META_KEY: {},
        CLIENT_INFO_META_KEY: {"name": "bench", "version": "1"},
    }
    request = JSONRPCRequest(
        jsonrpc="2.0",
        id=1,
        method="tools/call",
        params={"name": name, "arguments": {"timezone": "UTC"}, "_meta": meta},
    )
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        MCP_PROTOCOL_VERSION_HEADER: version,
        MCP_METHOD_HEADER: "tools/call",
        MCP_NAME_HEADER: name,
    }
    return request.model_dump_json(by_alias=True, exclude_none=True).encode(), headers


async def throughput(
    endpoint: str,
    token: str,
    args: argparse.Namespace,
    agent_pid: int,
    server_id: str,
    kind: str,
) -> None:
    stop = asyncio.Event()
    counts = [0] * args.clients
    measuring = asyncio.Event()

    async def one_sdk(i: int) -> None:
        async with session(endpoint, token, args.mode) as client:
            while not stop.is_set():
                await timed(client, "time__get_current_time", {"timezone": "UTC"})
                if measuring.is_set():
                    counts[i] += 1

    body, headers = replayed_call(token)

    async def one_replay(i: int) -> None:
        async with aiohttp.ClientSession(headers=headers) as http:
            while not stop.is_set():
                async with http.post(endpoint, data=body) as response:
                    answer = await response.json()
                if (
                    response.status != 200
                    or "result" not in answer
                    or answer["result"].get("isError")
                ):
                    raise RuntimeError(f"the call failed: {response.status} {answer}")
                if measuring.is_set():
                    counts[i] += 1

    one = one_sdk if kind == "sdk" else one_replay

    tasks = [asyncio.create_task(one(i)) for i in range(args.clients)]
    await asyncio.sleep(2)  # sessions open, warm
    before, cpu0, own0 = load(), cpu_seconds(agent_pid), time.process_time()
    server0 = container_cpu(server_id)
    measuring.set()
    t0 = time.perf_counter()
    await asyncio.sleep(args.seconds)
    measuring.clear()
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(agent_pid) - cpu0
    own = time.process_time() - own0
    server1 = container_cpu(server_id)
    stop.set()
    await asyncio.gather(*tasks)
    total = sum(counts)
    server = (
        f"the stdio server's CPU {(server1 - server0) / total * 1000:.2f} ms per call; "
        if server0 is not None and server1 is not None
        else ""
    )
    who = "SDK clients" if kind == "sdk" else "replaying clients"
    print(
        f"throughput, {who}: {args.clients} -> one stdio server (get_current_time), "
        f"{elapsed:.0f} s: {total / elapsed:.0f} calls/s; agent CPU {cpu / total * 1000:.2f} ms "
        f"per call ({cpu / elapsed * 100:.0f}% of a core); these clients' CPU "
        f"{own / total * 1000:.2f} ms per call; {server}load {before} -> {load()}"
    )


def interrupted(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def agent_with_toolbox(
    toolbox: str, spec: dict[str, Any], wrap: list[str] | None = None
) -> Iterator[tuple[str, str, Any, int]]:
    """An agent process of its own (free loopback port, private state dir, DTMA_REAP_GRACE=24h)
    with `spec` applied as `toolbox`: (its base URL, its token, the toolbox's status, its pid).
    `wrap` goes before the agent's script on its command line (e.g. `python -m cProfile -o F`).
    The status is yielded whatever its phase (the caller checks it). On exit it deletes the
    toolbox through the agent, stops the agent and removes the state dir (kept, and named,
    when the delete failed)."""
    state = Path(tempfile.mkdtemp(prefix="dtma-bench-gw-"))
    port = free_port()
    env = {
        **os.environ,
        "DTMA_LISTEN": f"127.0.0.1:{port}",
        "DTMA_STATE_DIR": str(state),
        "DTMA_REAP_GRACE": "24h",
        "DTMA_LOG_FORMAT": "json",
    }
    env.pop("VAULT_ADDR", None)
    log = (state / "agent.log").open("wb")
    # A session of its own: a signal to this script's group (`timeout`, Ctrl-C) must not stop
    # the agent before the finally below has deleted the toolbox through it.
    agent = subprocess.Popen(
        [*(wrap or []), DTMA, "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    token = ""
    cleaned = False
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(base + "/v1/ready", timeout=1):  # noqa: S310
                    break
            except OSError:
                time.sleep(0.1)
        token = (state / "api-token").read_text().strip()
        status = api(base, token, "PUT", f"/v1/toolboxes/{toolbox}?wait=120", spec)
        yield base, token, status, agent.pid
    finally:
        if token:
            try:
                op = api(base, token, "DELETE", f"/v1/toolboxes/{toolbox}")["operation"]
                while api(base, token, "GET", f"/v1/operations/{op}")["state"] == "running":
                    time.sleep(0.2)
                cleaned = True
            except (OSError, KeyError) as exc:
                print(f"could not delete {toolbox}: {exc}; its agent's state: {state}")
        agent.terminate()
        agent.wait(30)
        log.close()
        if cleaned or not token:
            shutil.rmtree(state, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--mode", choices=["auto", "legacy"], default="auto")
    parser.add_argument(
        "--pin",
        choices=["off", "warn", "block"],
        help="the toolbox's gateway.pin (default: the spec's default, block)",
    )
    args = parser.parse_args()
    spec = {**SPEC, "gateway": {"pin": args.pin}} if args.pin else SPEC
    signal.signal(signal.SIGTERM, interrupted)  # `timeout` too cleans up (agent_with_toolbox)
    with agent_with_toolbox(TOOLBOX, spec) as (base, token, status, agent_pid):
        if status.get("phase") != "healthy":
            print(f"the toolbox did not become healthy: {json.dumps(status)[:500]}")
            return 1
        direct = next(s["endpoint"] for s in status["servers"] if s["name"] == "notes")
        time_id = next(s["container_id"] for s in status["servers"] if s["name"] == "time")
        endpoint = f"{base}/v1/toolboxes/{TOOLBOX}/mcp"
        print(
            f"machine: {os.cpu_count()} cores, load {load()}; protocol mode {args.mode}; "
            f"gateway.pin {args.pin or 'block (default)'}; agent pid {agent_pid}"
        )
        asyncio.run(latency(endpoint, direct, token, args, agent_pid))
        for clients in ("sdk", "replay"):
            asyncio.run(throughput(endpoint, token, args, agent_pid, time_id, clients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
