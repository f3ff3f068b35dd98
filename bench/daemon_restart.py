"""Docker daemon restart -> N toolboxes serving again, beside the docker CLI's cold start of N
(issue 19), in one run, on a Docker daemon of the bench's own (tests/own_dockerd.py: the shared
daemon is never restarted).

Usage (as root): .venv/bin/python bench/daemon_restart.py [--n 100] [--live-restore]

It starts its own daemon, loads the mcp-time image into it, starts an agent on it and applies N
one-server toolboxes (bench/host_scale.py's spec). Then it stops the daemon (SIGTERM, as
`systemctl stop docker`) and starts it again, and prints the seconds from the daemon answering
again until every toolbox is `healthy` (and how many containers restarted). Then it deletes the
toolboxes and times N parallel `docker run -i` of the same image on the same daemon until all
answered tools/list, and prints the ratio (goal: <= 1.3). Everything it made goes with its daemon.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.host_scale import (
    IMAGE,
    Agent,
    agent_run,
    delete_all,
    docker_run,
    free_port,
    load,
    wait_all_healthy,
)
from tests.own_dockerd import OwnDockerd, can_run_own_dockerd


def restarts(agent: Agent, names: list[str]) -> int:
    status, body = agent.request("GET", "/v1/toolboxes")
    assert status == 200, body
    return sum(s["restarts"] for item in body["items"] for s in item["servers"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--live-restore", action="store_true")
    parser.add_argument("--deadline", type=float, default=600)
    args = parser.parse_args()
    why = can_run_own_dockerd()
    if why:
        print(f"daemon_restart: {why}", file=sys.stderr)
        return 2
    engine = OwnDockerd(live_restore=args.live_restore, pool="10.221.0.0/16")
    agent: Agent | None = None
    try:
        engine.start()
        engine.load_images(IMAGE)
        os.environ["DOCKER_HOST"] = engine.host  # the agent and the docker CLI both use it
        os.environ["DTMA_SUBNET_POOL"] = engine.pool
        os.environ["DTMA_AGENT_CONTAINER"] = "none"
        agent = Agent(Path(tempfile.mkdtemp(prefix="dtma-bench-dr-")), free_port())
        agent.start()
        names, took = agent_run(agent, args.n, args.deadline)
        if took is None:
            return 1
        print(f"{args.n} toolboxes healthy after {took:.1f}s{load()}", flush=True)
        before = restarts(agent, names)
        t_stop = time.perf_counter()
        engine.stop()
        stopped = time.perf_counter() - t_stop
        engine.start()
        t0 = time.perf_counter()
        back = wait_all_healthy(agent, names, t0, args.deadline)
        if back is None:
            return 1
        restarted = restarts(agent, names) - before
        delete_all(agent, names)
        cli = docker_run(args.n)
        if cli is None:
            print("docker run -i: not every container answered", file=sys.stderr)
            return 1
        mode = "live-restore" if args.live_restore else "containers stop with the daemon"
        print(f"daemon restart ({mode}): stop took {stopped:.1f}s")
        print(
            f"{'N':>4} {'all healthy after start s':>26} {'restarts':>9} "
            f"{'docker run -i x N s':>20} {'ratio':>6}"
        )
        print(f"{args.n:>4} {back:>26.1f} {restarted:>9} {cli:>20.1f} {back / cli:>6.2f}{load()}")
        return 0
    finally:
        if agent is not None:
            agent.stop()
        engine.destroy()


if __name__ == "__main__":
    sys.exit(main())
