"""A fleet rollout against one agent's rollout, in one run, and the RSS of an agent.

Usage: .venv/bin/python bench/fleet.py [--agents N] [--canary C] [--batch B] [--toolboxes T]
Needs the example images (scripts/build-images mcp-time). Starts N agent processes (own state
dir, port, agent id and subnet pool each), waits for them, and reports:
  - each agent's idle RSS with no toolbox (median and max, MB);
  - `dtma fleet apply` of a one-server toolbox (mcp-time, min_healthy_time 1s) to one agent;
  - the same command, a new revision, to all N (canary C, batch B), and the ratio, beside the
    floor (the number of waves times the one-agent time);
  - the load average, since the machine is shared;
  - with --toolboxes T: the first agent's RSS with T one-server toolboxes (mcp-time over stdio,
    applied at once with bench/host_scale.py's code), once all are healthy and their steady
    probes have run a while (the probes have loaded the MCP SDK by then).
Everything it made is removed at the end (the toolbox on every agent, then the agents by PID,
then any container or network left with their agent ids).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from host_scale import Agent as ScaleAgent  # bench/ is sys.path[0] when run as a script
from host_scale import agent_run, delete_all

DTMA = str(Path(sys.executable).parent / "dtma")
TIME_TOOLS = ["get_current_time", "convert_time"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def spec(tz: str) -> str:
    return json.dumps(
        {
            "servers": [
                {
                    "name": "time",
                    "image": "dtma-examples/mcp-time:latest",
                    "env": {"TZ": tz},
                    "health": {"expect_tools": TIME_TOOLS},
                }
            ],
            "rollout": {"min_healthy_time": "1s", "healthy_deadline": "120s"},
        }
    )


def fleet_file(path: Path, agents: list[tuple[str, int, Path]]) -> Path:
    lines = ["agents:"]
    for name, port, state in agents:
        lines += [
            f"  - name: {name}",
            f"    url: http://127.0.0.1:{port}",
            f"    token_file: {state / 'api-token'}",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def fleet(*args: str) -> float:
    t0 = time.perf_counter()
    run = subprocess.run([DTMA, "fleet", *args], capture_output=True, text=True, timeout=3600)
    took = time.perf_counter() - t0
    if run.returncode != 0:
        raise RuntimeError(f"dtma fleet {' '.join(args)}: exit {run.returncode}\n{run.stdout}")
    return took


def rss_at(agent: tuple[str, int, Path], pid: int, n: int) -> str:
    """The agent's RSS with n one-server toolboxes, all healthy; they are deleted after."""
    _, port, state = agent
    scale = ScaleAgent(state, port)
    names, took = agent_run(scale, n, deadline=600)
    try:
        if took is None:
            return f"RSS at {n} toolboxes: not measured, not all healthy within 600 s"
        time.sleep(20)  # the first steady probes (and their sessions) have run
        return (
            f"RSS at {n} toolboxes (all healthy in {took:.0f}s): {rss_mb(pid):.0f} MB, "
            f"{threads(pid)} threads; load average {os.getloadavg()[0]:.1f}"
        )
    finally:
        delete_all(scale, names)


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--canary", type=int, default=1)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--toolboxes", type=int, default=0)
    args = parser.parse_args()
    if not 1 < args.agents <= 64:
        parser.error("--agents must be 2..64")
    root = Path(tempfile.mkdtemp(prefix="dtma-bench-fleet-"))
    run_id = os.urandom(3).hex()
    procs: list[subprocess.Popen[bytes]] = []
    agents: list[tuple[str, int, Path]] = []
    toolbox = f"bench-{run_id}"
    try:
        t0 = time.perf_counter()
        for i in range(args.agents):
            state, port = root / f"agent-{i:02d}", free_port()
            state.mkdir()
            env = {
                **os.environ,
                "DTMA_LISTEN": f"127.0.0.1:{port}",
                "DTMA_STATE_DIR": str(state),
                "DTMA_AGENT_ID": f"bench-{run_id}-{i:02d}",
                # A /22 holds 32 toolbox networks; the first agent takes --toolboxes of them.
                "DTMA_SUBNET_POOL": "10.216.0.0/16"
                if i == 0 and args.toolboxes
                else f"10.215.{4 * i}.0/22",
                "DTMA_REAP_GRACE": "24h",
                "DTMA_LOG_FORMAT": "json",
                "DTMA_LOG_LEVEL": "warning",
            }
            env.pop("VAULT_ADDR", None)
            procs.append(subprocess.Popen([DTMA, "serve"], env=env, stderr=subprocess.DEVNULL))
            agents.append((f"agent-{i:02d}", port, state))
        for _, port, _ in agents:
            for _ in range(3000):
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/v1/ready", timeout=2
                    ):
                        break
                except OSError:
                    time.sleep(0.1)
            else:
                raise RuntimeError(f"agent on port {port} never became ready")
        ready = time.perf_counter() - t0
        time.sleep(15)  # start-up settles and the agent's first heap trim runs (dtma/heap.py)
        rss = [rss_mb(p.pid) for p in procs]
        print(f"{args.agents} agents ready in {ready:.1f}s (started all at once)")
        print(
            f"idle RSS per agent, no toolbox: median {statistics.median(rss):.0f} MB, "
            f"max {max(rss):.0f} MB, total {sum(rss):.0f} MB; "
            f"{threads(procs[0].pid)} threads"
        )
        one = fleet_file(root / "one.yaml", agents[:1])
        all_ = fleet_file(root / "fleet.yaml", agents)
        spec_file = root / "spec.yaml"
        spec_file.write_text(spec("UTC"))
        fleet("apply", "-F", str(all_), "-f", str(spec_file), "--id", toolbox, "--batch", "16")
        spec_file.write_text(spec("Europe/Paris"))
        single = fleet("apply", "-F", str(one), "-f", str(spec_file), "--id", toolbox)
        spec_file.write_text(spec("Asia/Tokyo"))
        whole = fleet(
            "apply", "-F", str(all_), "-f", str(spec_file), "--id", toolbox,
            "--canary", str(args.canary), "--batch", str(args.batch),
        )  # fmt: skip
        waves = args.canary + -(-(args.agents - args.canary) // args.batch)
        print(f"one agent's rollout (dtma fleet apply, 1 agent): {single:.1f}s")
        print(
            f"{args.agents}-agent fleet rollout (canary {args.canary}, batch {args.batch}, "
            f"{waves} waves): {whole:.1f}s = {whole / single:.1f}x one agent "
            f"(floor: {waves}x if a batch took as long as one agent)"
        )
        print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        fleet("rm", "-F", str(all_), "--id", toolbox)
        if args.toolboxes:
            print(rss_at(agents[0], procs[0].pid, args.toolboxes))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        for i in range(len(agents)):
            label = f"label=dtma.agent=bench-{run_id}-{i:02d}"
            ids = subprocess.run(
                ["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True
            ).stdout.split()
            if ids:
                subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
            nets = subprocess.run(
                ["docker", "network", "ls", "-q", "--filter", label],
                capture_output=True,
                text=True,
            ).stdout.split()
            if nets:
                subprocess.run(["docker", "network", "rm", *nets], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
