"""Host scale: N one-server toolboxes applied at once to a real agent vs N parallel `docker run -i`.

Usage: .venv/bin/python bench/host_scale.py [--sizes 20,40,100] [--idle 30] [--deadline 300]
Needs the mcp-time example image (scripts/build-images mcp-time). Starts its own agent (private
state dir, free loopback port, DTMA_REAP_GRACE=24h) and removes everything it created, by label.

For each N it prints the time until every toolbox is `healthy` (min_healthy_time 0.5 s) beside
the time until N `docker run -i` of the same image all answered `tools/list`, and their ratio.
At the largest N it also measures the agent's RSS, its idle CPU, GET /v1/toolboxes throughput,
and adoption after kill -9 (time to /v1/ready and to all healthy, and container restarts).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

DTMA = str(Path(sys.executable).parent / "dtma")
IMAGE = "dtma-examples/mcp-time:latest"
BENCH_LABEL = "dtma-bench.host-scale"
MIN_HEALTHY = 0.5
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "bench", "version": "0"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Agent:
    def __init__(self, state: Path, port: int) -> None:
        self.state, self.port = state, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start `dtma serve`; return the seconds until /v1/ready answers 200."""
        env = {**os.environ, "DTMA_LISTEN": f"127.0.0.1:{self.port}",
               "DTMA_STATE_DIR": str(self.state), "DTMA_REAP_GRACE": "24h",
               "DTMA_LOG_FORMAT": "json", "DTMA_LOG_LEVEL": "warning"}
        env.pop("VAULT_ADDR", None)
        t0 = time.perf_counter()
        with (self.state / "agent.log").open("ab") as log:
            self.proc = subprocess.Popen([DTMA, "serve"], env=env, stdout=log, stderr=log,
                                         stdin=subprocess.DEVNULL)
        while time.perf_counter() - t0 < 120:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: see {self.state / 'agent.log'}")
            try:
                if self.request("GET", "/v1/ready", auth=False)[0] == 200:
                    return time.perf_counter() - t0
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("agent not ready within 120 s")

    def request(self, method: str, path: str, body: Any = None,
                auth: bool = True, timeout: float = 60) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Content-Type": "application/json"}
            if auth:
                headers["Authorization"] = f"Bearer {self.token}"
            conn.request(method, path, json.dumps(body) if body is not None else None, headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    @property
    def token(self) -> str:
        return (self.state / "api-token").read_text().strip()

    @property
    def agent_id(self) -> str:
        return (self.state / "agent-id").read_text().strip()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill9()


def spec() -> dict[str, Any]:
    return {"servers": [{"name": "time", "image": IMAGE,
                         "health": {"expect_tools": ["get_current_time"]}}],
            "rollout": {"min_healthy_time": MIN_HEALTHY, "healthy_deadline": 300}}


def phases(agent: Agent) -> dict[str, str]:
    status, body = agent.request("GET", "/v1/toolboxes")
    assert status == 200, body
    return {item["id"]: item["phase"] for item in body["items"]}


def wait_all_healthy(agent: Agent, names: list[str], t0: float, deadline: float) -> float | None:
    while time.perf_counter() - t0 < deadline:
        seen = phases(agent)
        if all(seen.get(n) == "healthy" for n in names):
            return time.perf_counter() - t0
        time.sleep(0.25)
    seen = phases(agent)
    bad = {n: seen.get(n) for n in names if seen.get(n) != "healthy"}
    print(f"  not healthy after {deadline:g}s: {len(bad)} of {len(names)}, e.g. "
          f"{list(bad.items())[:3]}", file=sys.stderr)
    return None


def agent_run(agent: Agent, n: int, deadline: float) -> tuple[list[str], float | None]:
    names = [f"hs{n}-{i}" for i in range(n)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(lambda tb: agent.request("PUT", f"/v1/toolboxes/{tb}", spec())[0],
                              names))
    if any(c not in (200, 202) for c in codes):
        raise RuntimeError(f"PUT answers: {sorted(set(codes))}")
    return names, wait_all_healthy(agent, names, t0, deadline)


def delete_all(agent: Agent, names: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda tb: agent.request("DELETE", f"/v1/toolboxes/{tb}?wait=300",
                                               timeout=320), names))


def docker_one(tag: str, out: list[float], t0: float) -> None:
    proc = subprocess.Popen(
        ["docker", "run", "-i", "--rm", "--label", f"{BENCH_LABEL}={tag}", "--network", "none",
         IMAGE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write((json.dumps(INIT) + "\n").encode())
    proc.stdin.flush()
    for line in proc.stdout:
        msg = json.loads(line)
        if msg.get("id") == 1:
            proc.stdin.write((json.dumps(INITIALIZED) + "\n" + json.dumps(LIST) + "\n").encode())
            proc.stdin.flush()
        elif msg.get("id") == 2 and msg.get("result", {}).get("tools"):
            out.append(time.perf_counter() - t0)
            break
    proc.stdin.close()
    proc.wait(60)


def docker_run(n: int) -> float | None:
    tag = secrets.token_hex(4)
    done: list[float] = []
    t0 = time.perf_counter()
    threads = [threading.Thread(target=docker_one, args=(tag, done, t0)) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    sweep(f"{BENCH_LABEL}={tag}")
    return max(done) if len(done) == n else None


def sweep(label: str) -> None:
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"],
                         capture_output=True, text=True, check=False).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
    nets = subprocess.run(["docker", "network", "ls", "-q", "--filter", f"label={label}"],
                          capture_output=True, text=True, check=False).stdout.split()
    if nets:
        subprocess.run(["docker", "network", "rm", *nets], capture_output=True, check=False)


def load() -> str:
    """The 1-minute load average, printed beside every figure (the host may be shared)."""
    return f" (load {os.getloadavg()[0]:.1f})"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def throughput(agent: Agent, seconds: float = 5.0, clients: int = 4) -> tuple[float, str]:
    """GET /v1/toolboxes requests/s over keep-alive connections: with `wrk` when installed
    (Debian's wrk: 2 threads, 8 connections), else from `clients` Python threads."""
    if shutil.which("wrk"):
        out = subprocess.run(
            ["wrk", "-t2", "-c8", f"-d{seconds:g}s", "-H", f"Authorization: Bearer {agent.token}",
             f"http://127.0.0.1:{agent.port}/v1/toolboxes"],
            capture_output=True, text=True, check=True).stdout
        if "Non-2xx" in out:
            raise RuntimeError(f"wrk saw errors:\n{out}")
        rate = next(line.split()[1] for line in out.splitlines() if "Requests/sec" in line)
        return float(rate), f"wrk, 8 connections, {seconds:g} s"
    counts = [0] * clients
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=30)
        headers = {"Authorization": f"Bearer {agent.token}"}
        while time.perf_counter() < stop:
            conn.request("GET", "/v1/toolboxes", headers=headers)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
            counts[i] += 1
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0), f"{clients} Python clients, {seconds:g} s"


def container_starts(agent_id: str) -> dict[str, tuple[str, int]]:
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=dtma.agent={agent_id}"],
                         capture_output=True, text=True, check=True).stdout.split()
    if not ids:
        return {}
    raw = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True,
                         check=True).stdout
    return {c["Id"]: (c["State"]["StartedAt"], c["RestartCount"]) for c in json.loads(raw)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="20,40,100")
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--deadline", type=float, default=300.0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    state = Path(tempfile.mkdtemp(prefix="dtma-hostscale-"))
    agent = Agent(state, free_port())
    agent_id = ""
    print(f"machine: nproc {os.cpu_count()}, "
          f"mem {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    try:
        agent.start()
        agent_id = agent.agent_id
        print(f"{'N':>4} {'agent s':>8} {'docker run -i s':>16} {'ratio':>6}", flush=True)
        for n in sizes:
            cli = docker_run(n)
            names, took = agent_run(agent, n, args.deadline)
            ratio = f"{took / cli:.2f}" if took and cli else "-"
            print(f"{n:>4} {took or float('nan'):>8.1f} {cli or float('nan'):>16.1f} "
                  f"{ratio:>6}{load()}", flush=True)
            if n != sizes[-1]:
                delete_all(agent, names)
                continue
            if took is None:
                delete_all(agent, names)
                break
            extras(agent, agent_id, names, args)
            delete_all(agent, names)
        print(f"load after: {os.getloadavg()[0]:.2f}")
    finally:
        agent.stop()
        if agent_id:
            sweep(f"dtma.agent={agent_id}")
        shutil.rmtree(state, ignore_errors=True)
    return 0


def extras(agent: Agent, agent_id: str, names: list[str], args: argparse.Namespace) -> None:
    assert agent.proc is not None
    n = len(names)
    time.sleep(3)  # let the first steady probes settle
    pid = agent.proc.pid
    print(f"agent RSS at {n} toolboxes: {rss_mb(pid):.0f} MB{load()}", flush=True)
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    time.sleep(args.idle)
    idle = (cpu_seconds(pid) - c0) / (time.perf_counter() - t0) * 100
    print(f"agent idle CPU with {n} containers over {args.idle:g}s: {idle:.2f}% of a core"
          f"{load()}", flush=True)
    rate, how = throughput(agent)
    print(f"GET /v1/toolboxes at {n} toolboxes: {rate:.0f} req/s ({how}){load()}", flush=True)
    before = container_starts(agent_id)
    agent.kill9()
    t0 = time.perf_counter()
    ready = agent.start()
    healthy = wait_all_healthy(agent, names, t0, args.deadline)
    after = container_starts(agent_id)
    restarted = sum(1 for cid, start in before.items() if after.get(cid) != start)
    print(f"adoption after kill -9 at {n}: /v1/ready {ready:.2f}s, all healthy "
          f"{healthy or float('nan'):.2f}s, containers restarted or replaced: {restarted} of "
          f"{len(before)}{load()}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
