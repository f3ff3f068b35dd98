"""dtma's toolbox endpoint beside the peer bridges, in one run (issue 20, item 2).

Usage: .venv/bin/python bench/gateway_peers.py [--rounds R] [--block B] [--warmup W]
           [--clients K] [--seconds S] [--eras 2026-07-28,handshake] [--dir DIR]
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
   container during them is reported unusable (counted from `docker events` by label) and a
   target that cannot speak the era is reported as such, with the reason;
2. latency: R rounds; in each, B sequential calls per target, the targets' order rotating, so
   that all see the same load: p50 and p99 per target;
3. throughput, one target at a time: K clients (K sessions; for the floor K callers on its one
   stdio session) call back to back for S seconds after 2 s of warm-up: calls/s, and the
   bridge process's CPU per call (dtma: the agent; the floor has no bridge).

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
from bench.peer_bridges import PEERS, BridgeProcs, install
from bench.peers_report import DTMA, FLOOR, Figures, goal_check, p50_p99, table

IMAGE = "dtma-examples/mcp-time:latest"
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
LABEL = "dtma-bench.peers"


@dataclass(frozen=True)
class Target:
    name: str
    url: str | None  # None: the floor, a stdio session to its own `docker run -i`
    token: str | None
    pid: int | None  # the process whose CPU is the bridge's
    server: list[str]  # the stdio command of the floor and the peers


def server_argv(run: str, who: str) -> list[str]:
    """`docker run -i` of the image, labelled with the run and the bridge that starts it."""
    labels = ["--label", f"{LABEL}={run}", "--label", f"{LABEL}.bridge={who}"]
    return ["docker", "run", "-i", "--rm", *labels, IMAGE]


class StartCounter:
    """Counts the server containers each bridge starts, from `docker events` (by label)."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.starts: Counter[str] = Counter()
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StartCounter:
        fmt = '{{index .Actor.Attributes "' + LABEL + '.bridge"}}'
        self._proc = await asyncio.create_subprocess_exec(
            *["docker", "events", "--filter", f"label={LABEL}={self.run}"],
            *["--filter", "event=start", "--format", fmt],
            stdout=asyncio.subprocess.PIPE,
        )
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        async for line in self._proc.stdout:
            self.starts[line.decode().strip()] += 1

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()
        if self._task is not None:
            await self._task


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
                fig.note = f"no {MODERN} era: the SDK client's discover fell back to the handshake"
                await stack.aclose()
                return fig
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
                    f"unusable: {new} new server container(s) within {calls} calls on one session"
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


async def throughput(
    target: Target, fig: Figures, tool: str, clients: int, seconds: float, counter: StartCounter
) -> None:
    """K clients (K sessions; the floor: K callers on one session) for `seconds`."""
    mode = ERAS[fig.era]
    stop, measuring = asyncio.Event(), asyncio.Event()
    counts = [0] * clients
    starts0 = counter.starts[target.name]  # the sessions' own servers count
    try:
        async with AsyncExitStack() as stack:
            n = 1 if target.url is None else clients
            sessions = [await stack.enter_async_context(client_for(target, mode)) for _ in range(n)]

            async def one(i: int) -> None:
                while not stop.is_set():
                    await call_ms(sessions[i % n], tool)
                    if measuring.is_set():
                        counts[i] += 1

            tasks = [asyncio.create_task(one(i)) for i in range(clients)]
            await asyncio.sleep(2)
            cpu0 = cpu_seconds(target.pid) if target.pid else 0.0
            measuring.set()
            t0 = time.perf_counter()
            await asyncio.sleep(seconds)
            measuring.clear()
            elapsed = time.perf_counter() - t0
            cpu = (cpu_seconds(target.pid) - cpu0) if target.pid else None
            stop.set()
            await asyncio.gather(*tasks)
    except Exception as exc:
        stop.set()
        fig.note = (fig.note + "; " if fig.note else "") + f"throughput: {why(exc)}"
        return
    total = sum(counts)
    fig.calls_per_s = total / elapsed
    if cpu is not None and total:
        fig.cpu_ms = cpu / total * 1000
    await asyncio.sleep(0.5)  # docker events arrive a little after the start
    fig.starts = (fig.starts or 0) + counter.starts[target.name] - starts0


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
            for o in held:
                if o.fig.p50 is None:
                    continue
                print(f"era {era}: throughput {o.target.name}; load {load()}", flush=True)
                await throughput(o.target, o.fig, o.tool, args.clients, args.seconds, counter)
            rows += era_rows
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--block", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
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
