"""What the per-call cancel machinery costs, in-process: the hot path's old disconnect watch (a
timer armed and cancelled per call, `_CancelledOnceGone`) against an anyio `CancelScope`
entered and left per call (what `engine/call_guard.py` and a handshake-era session's call in
`gateway/handshake.py` now do), each around an `await asyncio.sleep(0)`, and that await alone.

Usage: .venv/bin/python bench/cancel_scope_cost.py [--calls N] [--rounds R]
Prints the median over R alternating rounds of the time per call of each, in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import anyio


async def bare() -> None:
    await asyncio.sleep(0)


async def timer_watch() -> None:
    handle = asyncio.get_running_loop().call_later(0.5, lambda: None)
    try:
        await asyncio.sleep(0)
    finally:
        handle.cancel()


async def cancel_scope() -> None:
    with anyio.CancelScope():
        await asyncio.sleep(0)


async def per_call(body: Callable[[], Awaitable[None]], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await body()
    return (time.perf_counter() - started) / calls * 1e6


async def main(calls: int, rounds: int) -> None:
    bodies = {"await alone": bare, "timer watch (old)": timer_watch, "CancelScope": cancel_scope}
    times: dict[str, list[float]] = {name: [] for name in bodies}
    for _ in range(rounds):
        for name, body in bodies.items():
            times[name].append(await per_call(body, calls))
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{calls} calls x {rounds} rounds, load {load}")
    for name, values in times.items():
        print(f"  {name:20} {statistics.median(values):6.2f} us per call")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
