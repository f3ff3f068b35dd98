"""dtma's toolbox endpoint beside the peer bridges, in one run (issue 20, item 2).

Usage: .venv/bin/python bench/gateway_peers.py [--rounds R] [--block B] [--warmup W]
           [--clients K] [--seconds S] [--slices N] [--eras 2026-07-28,handshake] [--dir DIR]
           [--peers mcp-proxy,fastmcp,supergateway] [--profile-agent FILE]
Needs the mcp-time example image (scripts/build-images mcp-time), node/npm and PyPI.

Installs PyPI `mcp-proxy` and `fastmcp` and npm `supergateway` under DIR (default
`.bench/peers` in the repository, git-ignored; bench/peer_bridges.py; reused when there) and
starts each, on a loopback port, in front of `docker run -i --rm <mcp-time image>`. Beside them:
dtma's endpoint to the same image in a toolbox of an agent of its own (as
bench/gateway_latency.py starts one; the server allowed 2 CPUs), and the floor: the SDK's stdio
client straight to `docker run -i`. For each era (2026-07-28: the SDK client's `auto` mode, which
must end in a 2026-07-28 session; handshake: `legacy` mode, 2025-11-25), with the official SDK
client of the project's venv:

1. a session per target; W warm-up `get_current_time` calls; a bridge that starts a new server
   container during them is reported unusable (counted from `docker events` by label); one
   whose session falls back to the handshake in the 2026-07-28 era is reported as such and
   measured as it is, since that is what a 2026-07-28 client gets from it;
2. latency: R rounds; in each, B sequential calls per target, the targets' order rotating, so
   that all see the same load: p50 and p99 per target;
3. throughput: K clients per target (K sessions; for the floor K callers on its one stdio
   session), all open at once, taking turns: in each of N slices every target's clients call
   back to back for S/N seconds while the others wait, the order rotating (1 s of warm-up in
   the first slice): calls/s, and the bridge process's CPU per call (dtma: the agent; the
   floor has no bridge).

"servers started" counts the server containers a target started after its warm-up: during the
latency rounds and for the throughput phase's sessions and calls (mcp-proxy and fastmcp share
one server between sessions; supergateway starts one per session).

Then it prints one table and the goal check (dtma's median <= the best peer's, and its calls/s
>= 1.25x the best peer's, per era). A miss is printed, not an exit status. It removes what it
started: the bridges, the agent and its toolbox, and every container by its label.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcp import Client, StdioServerParameters
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from bench.gateway_latency import agent_with_toolbox, cpu_seconds, interrupted, load, session
from bench.host_scale import sweep
from bench.peer_bridges import IMAGE, LABEL, PEERS, BridgeProcs, StartCounter, install, server_argv
from bench.peers_report import DTMA, FLOOR, Figures, goal_check, p50_p99, table

TOOLBOX = "bench-peers"
SPEC = {
    "servers": [
        {
            "name": "time",
            "image": IMAGE,
            "health": {"expect_tools": ["get_current_time"]},
            "resources": {"cpus": 2},  # not the default 0.5: `docker run` has no limit either
        }
    ],
    "rollout": {"min_healthy_time": "1s"},
}
MODERN = "2026-07-28"
ERAS = {MODERN: "auto", "handshake": "legacy"}
ARGS = {"timezone": "UTC"}
CALL_TIMEOUT = 30.0
OPEN_TIMEOUT = 90.0


@dataclass(frozen=True)
class Target:
    name: str
    url: str | None  # None: the floor, a stdio session to its own `docker run -i`
    token: str | None
    pid: int | None  # the process whose CPU is the bridge's
    server: list[str]  # the stdio command of the floor and the peers


@asynccontextmanager
async def client_for(target: Target, mode: str) -> AsyncIterator[Client]:
    if target.url is not None:
        async with session(target.url, target.token, mode) as client:
            yield client
        return
    params = StdioServerParameters(command=target.server[0], args=target.server[1:])
    async with Client(params, mode=mode) as client:  # type: ignore[arg-type]
        yield client


async def call_ms(client: Client, tool: str) -> float:
    t0 = time.perf_counter()
    async with asyncio.timeout(CALL_TIMEOUT):
        result = await client.call_tool(tool, ARGS)
    elapsed = (time.perf_counter() - t0) * 1000
    if result.is_error:
        raise RuntimeError(f"{tool} answered an error: {str(result)[:200]}")
    return elapsed


def why(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"failed: {type(exc).__name__}: {exc}"[:240]


@dataclass
class Open:
    """A target's held session in one era, ready for the latency rounds."""

    target: Target
    fig: Figures
    stack: AsyncExitStack
    client: Client
    tool: str


async def open_checked(
    target: Target, era: str, warmup: int, counter: StartCounter
) -> Open | Figures:
    """A session in `era`, warmed up; or the target's Figures saying why it is left out."""
    fig = Figures(era, target.name)
    stack = AsyncExitStack()
    try:
        async with asyncio.timeout(OPEN_TIMEOUT):
            client = await stack.enter_async_context(client_for(target, ERAS[era]))
            fig.protocol = str(client.session.protocol_version)
            if era == MODERN and fig.protocol not in MODERN_PROTOCOL_VERSIONS:
                # Measured all the same, in this era's load: what such a client gets.
                fig.note = (
                    f"no {MODERN} era: the SDK client's discover fell back to the handshake; "
                    "its figures are that fallback's"
                )
            listed = await client.list_tools()
            tool = next(t.name for t in listed.tools if t.name.endswith("get_current_time"))
            before = counter.starts[target.name]
            calls = 0
            while calls < warmup and counter.starts[target.name] == before:
                await call_ms(client, tool)
                calls += 1
            await asyncio.sleep(0.5)  # docker events arrive a little after the start
            if (new := counter.starts[target.name] - before) > 0:
                fig.note = (
                    f"unusable: {new} new server container{'s' * (new != 1)} within {calls} "
                    f"call{'s' * (calls != 1)} on one session"
                )
                fig.starts = new
                await stack.aclose()
                return fig
    except Exception as exc:  # a bridge's failure is a finding, reported in its row
        fig.note = why(exc)
        with suppress(Exception):
            await stack.aclose()
        return fig
    return Open(target, fig, stack, client, tool)


async def latency(held: list[Open], rounds: int, block: int, counter: StartCounter) -> None:
    samples: dict[str, list[float]] = {o.target.name: [] for o in held}
    before = {o.target.name: counter.starts[o.target.name] for o in held}
    alive = list(held)
    for r in range(rounds):
        order = alive[r % len(alive) :] + alive[: r % len(alive)] if alive else []
        for o in order:
            try:
                for _ in range(block):
                    samples[o.target.name].append(await call_ms(o.client, o.tool))
            except Exception as exc:
                o.fig.note = f"latency: {why(exc)}"
                alive.remove(o)
    for o in held:
        if o in alive and len(samples[o.target.name]) >= 2:
            o.fig.p50, o.fig.p99 = p50_p99(samples[o.target.name])
        o.fig.starts = counter.starts[o.target.name] - before[o.target.name]


class Turns:
    """Whose clients may call now, whose calls count, and how many are in flight, by target.
    One event loop; no locks needed."""

    def __init__(self, names: list[str]) -> None:
        self.go = {n: asyncio.Event() for n in names}
        self.counting: str | None = None
        self.counts: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.errors: dict[str, str] = {}
        self.stop = False

    async def drained(self, name: str) -> None:
        deadline = time.monotonic() + CALL_TIMEOUT
        while self.in_flight[name] and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded
            await asyncio.sleep(0.01)


async def caller(turns: Turns, name: str, client: Client, tool: str) -> None:
    while not turns.stop:
        await turns.go[name].wait()
        if turns.stop:
            return
        turns.in_flight[name] += 1
        try:
            await call_ms(client, tool)
        except Exception as exc:
            turns.errors.setdefault(name, why(exc))
            turns.go[name].clear()
            return
        finally:
            turns.in_flight[name] -= 1
        if turns.counting == name:
            turns.counts[name] += 1


async def throughput(
    held: list[Open], clients: int, seconds: float, slices: int, counter: StartCounter
) -> None:
    """K clients per target (K sessions; the floor: K callers on its one session), all open at
    once. The targets take turns: in each of `slices` rounds each target's clients call back
    to back for seconds/slices while the others' wait, the order rotating, so that all see
    the same load. Fills each Figures' calls/s, CPU per call and servers started."""
    live = [o for o in held if o.fig.p50 is not None]
    if not live:
        return
    before = {o.target.name: counter.starts[o.target.name] for o in live}
    turns = Turns([o.target.name for o in live])
    elapsed: Counter[str] = Counter()
    cpu: Counter[str] = Counter()
    tasks: list[asyncio.Task[None]] = []
    async with AsyncExitStack() as stack:
        for o in live:
            n = 1 if o.target.url is None else clients
            try:
                async with asyncio.timeout(OPEN_TIMEOUT):
                    mode = ERAS[o.fig.era]
                    sessions = [
                        await stack.enter_async_context(client_for(o.target, mode))
                        for _ in range(n)
                    ]
            except Exception as exc:
                turns.errors[o.target.name] = why(exc)
                continue
            name = o.target.name
            tasks += [
                asyncio.create_task(caller(turns, name, sessions[i % n], o.tool))
                for i in range(clients)
            ]
        for r in range(slices):
            for o in live[r % len(live) :] + live[: r % len(live)]:
                name, pid = o.target.name, o.target.pid
                if name in turns.errors:
                    continue
                turns.go[name].set()
                await asyncio.sleep(1.0 if r == 0 else 0.2)  # warm, then settled
                cpu0, t0 = cpu_seconds(pid) if pid else 0.0, time.perf_counter()
                turns.counting = name
                await asyncio.sleep(seconds / slices)
                turns.counting = None
                elapsed[name] += time.perf_counter() - t0
                cpu[name] += cpu_seconds(pid) - cpu0 if pid else 0.0
                turns.go[name].clear()
                await turns.drained(name)
        turns.stop = True
        for event in turns.go.values():
            event.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0.5)  # docker events arrive a little after the start
    for o in live:
        name = o.target.name
        o.fig.starts = (o.fig.starts or 0) + counter.starts[name] - before[name]
        if name in turns.errors:
            o.fig.note = (
                o.fig.note + "; " if o.fig.note else ""
            ) + f"throughput: {turns.errors[name]}"
        elif elapsed[name]:
            o.fig.calls_per_s = turns.counts[name] / elapsed[name]
            if o.target.pid and turns.counts[name]:
                o.fig.cpu_ms = cpu[name] / turns.counts[name] * 1000


async def measure(
    targets: list[Target], absent: dict[str, str], args: argparse.Namespace, run: str
) -> list[Figures]:
    rows: list[Figures] = []
    async with StartCounter(run) as counter:
        for era in args.eras:
            print(f"era {era}: opening sessions; load {load()}", flush=True)
            held: list[Open] = []
            era_rows: list[Figures] = []
            for target in targets:
                got = await open_checked(target, era, args.warmup, counter)
                era_rows.append(got.fig if isinstance(got, Open) else got)
                if isinstance(got, Open):
                    held.append(got)
            era_rows += [Figures(era, name, note=note) for name, note in absent.items()]
            print(f"era {era}: latency, {len(held)} targets; load {load()}", flush=True)
            await latency(held, args.rounds, args.block, counter)
            for o in reversed(held):  # anyio's cancel scopes close last-in, first-out
                with suppress(Exception):
                    await o.stack.aclose()
            print(f"era {era}: throughput; load {load()}", flush=True)
            await throughput(held, args.clients, args.seconds, args.slices, counter)
            rows += era_rows
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--slices", type=int, default=5)
    parser.add_argument("--eras", type=lambda s: s.split(","), default=list(ERAS))
    parser.add_argument(
        "--peers",
        type=lambda s: [p for p in s.split(",") if p],
        default=list(PEERS),
        help="the peers to run, comma-separated ('' for none: dtma and the floor only)",
    )
    parser.add_argument(
        "--profile-agent",
        type=Path,
        metavar="FILE",
        help="run the agent under cProfile, its stats written to FILE when it stops",
    )
    parser.add_argument(
        "--dir", type=Path, default=Path(__file__).resolve().parent.parent / ".bench" / "peers"
    )
    args = parser.parse_args()
    if unknown := [e for e in args.eras if e not in ERAS]:
        parser.error(f"--eras: unknown {unknown}; known: {','.join(ERAS)}")
    if unknown := [p for p in args.peers if p not in PEERS]:
        parser.error(f"--peers: unknown {unknown}; known: {','.join(PEERS)}")
    wrap = None
    if args.profile_agent:
        wrap = [sys.executable, "-m", "cProfile", "-o", str(args.profile_agent.resolve())]
    signal.signal(signal.SIGTERM, interrupted)  # `timeout` too cleans up (the finally below)
    inst = install(args.dir)
    print(
        f"machine: {os.cpu_count()} cores, load {load()}; peers under {inst.root}: "
        + ", ".join(f"{k} {v}" for k, v in inst.versions.items()),
        flush=True,
    )
    run = secrets.token_hex(4)
    procs = BridgeProcs(Path(tempfile.mkdtemp(prefix="dtma-bench-peers-")))
    rows: list[Figures] = []
    t0 = time.monotonic()
    try:
        with agent_with_toolbox(TOOLBOX, SPEC, wrap) as (base, token, status, agent_pid):
            if status.get("phase") != "healthy":
                print(f"the toolbox did not become healthy: {str(status)[:500]}")
                return 1
            for name in args.peers:
                procs.start(inst, name, server_argv(run, name))
            absent = procs.wait_listening()
            targets = [
                Target(FLOOR, None, None, None, server_argv(run, FLOOR)),
                Target(DTMA, f"{base}/v1/toolboxes/{TOOLBOX}/mcp", token, agent_pid, []),
            ]
            targets += [
                Target(name, url, None, proc.pid, server_argv(run, name))
                for name, (proc, url) in procs.running.items()
            ]
            rows = asyncio.run(measure(targets, absent, args, run))
    finally:
        procs.stop()
        sweep(f"{LABEL}={run}")
    print(f"\n{table(rows)}\n")
    for era in args.eras:
        for line in goal_check(rows, era, PEERS, fallback="handshake"):
            print(line)
    print(f"whole run {time.monotonic() - t0:.0f} s; load {load()}; bridge logs: {procs.log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
