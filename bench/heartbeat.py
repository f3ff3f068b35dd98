"""Heartbeat cost: the agent's CPU per heartbeat at N toolboxes (issue 21: goal <= 5 ms at 100).

Usage: .venv/bin/python bench/heartbeat.py [--toolboxes 100] [--heartbeats 300]

In process, without Docker: a real SQLite state DB (a temp dir) holding N toolboxes, the
agent's own status code (engine/status_view.py) with one healthy server per toolbox, the real
HeartbeatSender, HttpController and host facts, POSTing to a controller that runs in a child
process (so its CPU is not counted). The interval is 1 s, and a phase change is pushed after
every acknowledged heartbeat, so heartbeats follow each other as fast as pushes go; half of
them are deltas carrying one toolbox, and every 10th is full. It prints this process's CPU
(user + system, every thread: the loop, SQLite's, the host-facts thread) per heartbeat, the
full and delta body sizes, and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dtma.adapters.controller_http import ControllerConfig, HttpController
from dtma.adapters.host_facts import read_host_facts
from dtma.adapters.sqlite_store import SqliteStateStore
from dtma.adapters.state_repo import StateRepository
from dtma.domain.heartbeat import AgentFacts, Answer
from dtma.domain.records import EventRecord
from dtma.engine.heartbeat import HeartbeatSender
from dtma.engine.status_view import toolbox_status

CONTROLLER = """
import sys
from aiohttp import web
sizes = {"full": 0, "delta": 0}
async def hb(request):
    body = await request.read()
    sizes["full" if b'"full":true' in body else "delta"] = len(body)
    return web.json_response({})
async def size(request):
    return web.json_response(sizes)
app = web.Application()
app.router.add_post("/v1/agents/{a}/heartbeat", hb)
app.router.add_get("/sizes", size)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def fill(repo: StateRepository, n: int) -> None:
    for i in range(n):
        tid = f"tb-{i:03d}"
        rev, _ = await repo.add_revision(tid, "{}", secrets.token_hex(8))
        await repo.mark_stable(tid, rev.number)
        await repo.update_toolbox(tid, phase="healthy")


async def run(n: int, count: int, port: int) -> dict[str, float]:
    state = Path(tempfile.mkdtemp(prefix="dtma-bench-hb-"))
    store = SqliteStateStore.in_state_dir(state)
    await store.open()
    repo = StateRepository(store)
    await fill(repo, n)
    server = {"name": "time", "revision": 1, "container_id": "c" * 64, "state": "running",
              "health": "healthy", "restarts": 0, "endpoint": None,
              "tools": ["get_current_time", "convert_time"], "last_error": None}  # fmt: skip
    flip = {"phase": "healthy"}

    async def statuses() -> list[dict[str, Any]]:
        # What Agent.statuses() does, with one live server per toolbox.
        out = []
        for row in await repo.listing():
            status = toolbox_status(row, None, lambda text, limit: text[:limit])
            status["servers"] = [server]
            out.append(status)
        out[0]["phase"] = flip["phase"]
        return out

    config = ControllerConfig(
        url=f"http://127.0.0.1:{port}",
        token="bench-" + "t" * 32,
        interval=1.0,
        advertise_url="http://127.0.0.1:8750",
        labels=MappingProxyType({"zone": "bench"}),
    )
    transport = HttpController(config, "bench-agent", timeout=1.0)
    done = asyncio.Event()

    class Counting:
        url = transport.url

        async def send(self, body: bytes) -> Answer:
            answer = await transport.send(body)
            sent.append(answer.outcome)
            if len(sent) >= count + 10:
                done.set()
            # A change after every heartbeat: the next one is a push, 0.2 s later.
            flip["phase"] = "degraded" if flip["phase"] == "healthy" else "healthy"
            await sender.observe(EVENT)
            return answer

        async def close(self) -> None:
            await transport.close()

    sent: list[str] = []
    sender = HeartbeatSender(
        agent=AgentFacts("bench-agent", "bench", time.time(), config.advertise_url, config.labels),
        transport=Counting(),
        interval=1.0,
        toolboxes=statuses,
        host=lambda: read_host_facts(state),
    )
    task = asyncio.create_task(sender.run())
    while len(sent) < 10:  # warm-up: imports, connections, SQLite caches
        await asyncio.sleep(0.05)
    cpu0, wall0, n0 = time.process_time(), time.monotonic(), len(sent)
    await done.wait()
    cpu, wall, beats = time.process_time() - cpu0, time.monotonic() - wall0, len(sent) - n0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await store.close()
    assert set(sent) == {"ok"}, set(sent)
    return {"heartbeats": beats, "cpu_ms_per_heartbeat": 1000 * cpu / beats, "wall_s": wall}


EVENT = EventRecord(0, 0.0, "toolbox_phase_changed", "tb-000", None, 1, None, "", "bench")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toolboxes", type=int, default=100)
    parser.add_argument("--heartbeats", type=int, default=300)
    args = parser.parse_args()
    port = free_port()
    controller = subprocess.Popen([sys.executable, "-c", CONTROLLER, str(port)])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        result = asyncio.run(run(args.toolboxes, args.heartbeats, port))
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/sizes") as resp:  # noqa: S310
            sizes = resp.read().decode()
    finally:
        controller.terminate()
        controller.wait(10)
    print(  # noqa: T201
        f"toolboxes={args.toolboxes} heartbeats={result['heartbeats']} "
        f"cpu_per_heartbeat={result['cpu_ms_per_heartbeat']:.2f} ms "
        f"wall={result['wall_s']:.1f}s body_bytes={sizes} "
        f"cpus={os.cpu_count()} load1={os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
