"""Heartbeat sizes, and what 1,000 agents cost a controller (docs/fleet.md, "1,000 hosts").

Usage: .venv/bin/python bench/heartbeat_size.py [--toolboxes 0,10,100] [--hosts 1000]
       [--interval 15]

For each toolbox count N, in process and without Docker: a real SQLite state DB holding N
toolboxes (ids `toolbox-000`...; one healthy server each), their statuses from the agent's own
status code (engine/status_view.py), heartbeat bodies from the agent's own heartbeat code
(domain/heartbeat.py: AckLedger decides full or delta, `payload` builds the body, serialized as
engine/heartbeat.py does), sent with the real HTTP client (adapters/controller_http.py) to a
raw TCP listener that counts every byte of each request (request line, headers, body). The
agent does not compress its heartbeats; the gzip column (level 6) only shows what compression
would save. `parse` is what json.loads of the body costs a Python controller on this machine
(best of 5 runs of 200). Four heartbeats per N, in this order: the first (full), one with
nothing changed (an empty delta), one after one toolbox changed phase (a delta of one), one
after every toolbox changed (a delta of N, as after a fleet-wide rollout). Then the load at
--hosts agents and --interval: one heartbeat per agent per interval, every 10th full.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import secrets
import sys
import tempfile
import time
import timeit
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dtma.adapters.controller_http import ControllerConfig, HttpController
from dtma.adapters.host_facts import read_host_facts
from dtma.adapters.sqlite_store import SqliteStateStore
from dtma.adapters.state_repo import StateRepository
from dtma.domain.heartbeat import (
    FULL_EVERY,
    AckLedger,
    AgentFacts,
    counts_of,
    entry_from_status,
    payload,
)
from dtma.engine.status_view import toolbox_status

# What the Nomad job in deploy/nomad sends: a node name, a datacenter and a region.
LABELS = MappingProxyType({"node": "node-0007.dc1.example", "dc": "dc1", "region": "global"})
SERVER = {"name": "time", "revision": 1, "container_id": "c" * 64, "state": "running",
          "health": "healthy", "restarts": 0, "endpoint": None,
          "tools": ["get_current_time", "convert_time"], "last_error": None}  # fmt: skip


class Recorder:
    """A listener that answers every request `200 {}` and records each request's size."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.sizes.append(len(head) + len(body))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 2\r\n\r\n{}")  # fmt: skip
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def statuses(repo: StateRepository, phase_of: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for row in await repo.listing():
        status = toolbox_status(row, None, lambda text, limit: text[:limit])
        status["servers"] = [SERVER]
        status["phase"] = phase_of.get(status["id"], status["phase"])
        out.append(status)
    return out


async def measure(n: int) -> list[dict[str, Any]]:
    state = Path(tempfile.mkdtemp(prefix="dtma-bench-hbsize-"))
    store = SqliteStateStore.in_state_dir(state)
    await store.open()
    repo = StateRepository(store)
    for i in range(n):
        tid = f"toolbox-{i:03d}"
        rev, _ = await repo.add_revision(tid, "{}", secrets.token_hex(8))
        await repo.mark_stable(tid, rev.number)
        await repo.update_toolbox(tid, phase="healthy")
    recorder = Recorder()
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = ControllerConfig(
        url=f"http://127.0.0.1:{port}",
        token=secrets.token_urlsafe(32),  # a token of the length `secrets` makes (43 chars)
        interval=15.0,
        advertise_url="http://10.0.0.7:8750",
        labels=LABELS,
    )
    agent_id = secrets.token_hex(6)  # as agent_id.py generates one
    transport = HttpController(config, agent_id, timeout=5.0)
    agent = AgentFacts(agent_id, "0.1.0", round(time.time(), 3), config.advertise_url, LABELS)
    ledger = AckLedger()
    phase_of: dict[str, str] = {}
    rows = []
    ids = [f"toolbox-{i:03d}" for i in range(n)]
    steps = [  # (heartbeat, the toolboxes that change phase before it, to what)
        ("full (first)", [], ""),
        ("delta, nothing changed", [], ""),
        ("delta, 1 toolbox changed", ids[:1], "degraded"),
        ("delta, every toolbox changed", ids, "deploying"),
    ]
    try:
        for name, changed, phase in steps:
            phase_of.update(dict.fromkeys(changed, phase))
            current = await statuses(repo, phase_of)
            entries = [entry_from_status(s) for s in current]
            plan = ledger.plan(entries)
            host = await read_host_facts(state)
            counts = counts_of(entries, sum(len(s["servers"]) for s in current))
            body = payload(agent, plan, round(time.time(), 3), host, counts)
            raw = json.dumps(body, separators=(",", ":")).encode()  # as engine/heartbeat.py
            answer = await transport.send(raw)
            assert answer.acknowledged, answer
            ledger.acknowledged(plan, answer.resync)
            rows.append({
                "toolboxes": n, "heartbeat": name, "full": plan.full,
                "carried": len(plan.toolboxes), "body": len(raw),
                "gzip": len(gzip.compress(raw, 6)), "wire": recorder.sizes[-1],
                "parse_us": 1e6 * min(timeit.repeat(lambda raw=raw: json.loads(raw), number=200,
                                                    repeat=5)) / 200,
            })  # fmt: skip
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()
        await store.close()
    return rows


def load(rows: list[dict[str, Any]], hosts: int, interval: float) -> dict[str, float]:
    """Requests/s and bytes/s at the controller: every agent sends one heartbeat per interval;
    of every FULL_EVERY, one is full and the rest deltas (quiet: empty; busy: one toolbox)."""
    by = {r["heartbeat"]: r["wire"] for r in rows}
    per_s = hosts / interval
    quiet = (by["full (first)"] + (FULL_EVERY - 1) * by["delta, nothing changed"]) / FULL_EVERY
    busy = (by["full (first)"] + (FULL_EVERY - 1) * by["delta, 1 toolbox changed"]) / FULL_EVERY
    return {
        "requests_per_s": per_s,
        "quiet_bytes_per_s": per_s * quiet,
        "busy_bytes_per_s": per_s * busy,
        "all_full_bytes_per_s": per_s * by["full (first)"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toolboxes", default="0,10,100")
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=15.0)
    args = parser.parse_args()
    counts = [int(x) for x in args.toolboxes.split(",")]
    print("| toolboxes | heartbeat | full | entries | body bytes | gzip -6 | on the wire | parse |")
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    for n in counts:
        rows = asyncio.run(measure(n))
        results[n] = rows
        for r in rows:
            print(
                f"| {n} | {r['heartbeat']} | {r['full']} | {r['carried']} | {r['body']:,} "
                f"| {r['gzip']:,} | {r['wire']:,} | {r['parse_us']:.0f} us |"
            )
    print()
    print(f"At {args.hosts:,} agents, interval {args.interval:g} s, every {FULL_EVERY}th full:")
    print("| toolboxes per agent | requests/s | quiet KB/s | 1 change each KB/s | all full KB/s |")
    print("|---|---|---|---|---|")
    for n, rows in results.items():
        x = load(rows, args.hosts, args.interval)
        print(
            f"| {n} | {x['requests_per_s']:.1f} | {x['quiet_bytes_per_s'] / 1000:,.1f} "
            f"| {x['busy_bytes_per_s'] / 1000:,.1f} | {x['all_full_bytes_per_s'] / 1000:,.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
