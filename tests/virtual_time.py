"""An asyncio event loop on virtual time, for engine unit tests over the fakes.

Whenever the loop would sleep until its next timer and nothing else is ready, virtual time jumps
to that timer instead: the engine's own sleeps (gate ticks, probe intervals, restart backoff,
min_healthy_time, healthy_deadline) cost no real time, while their order and arithmetic stay
exactly what they are on a real loop. Work handed to a thread (run_in_executor, to_thread) is
waited for in real time, so a timer never fires early because a thread has not answered yet.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, TypeVar, TypeVarTuple

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class _VirtualSelector(selectors.DefaultSelector):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.threads = 0  # executor jobs in flight

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None or self.threads:
            started = time.monotonic()
            ready = super().select(timeout)
            self.now += time.monotonic() - started
            return ready
        self.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now

    def run_in_executor(
        self, executor: Executor | None, func: Callable[[*Ts], T], *args: *Ts
    ) -> asyncio.Future[T]:
        future = super().run_in_executor(executor, func, *args)
        self._virtual.threads += 1

        def done(_: asyncio.Future[T]) -> None:
            self._virtual.threads -= 1

        future.add_done_callback(done)
        return future


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]], limit: float = 3600.0) -> T:
    """Run `main()` on a fresh VirtualTimeLoop; fail if it takes over `limit` virtual seconds.
    Tasks it leaves behind are cancelled and awaited before the loop closes."""
    loop = VirtualTimeLoop()

    async def bounded() -> T:
        async with asyncio.timeout(limit):
            return await main()

    try:
        return loop.run_until_complete(bounded())
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


async def eventually(predicate: Callable[[], bool | Awaitable[bool]], within: float = 60.0) -> None:
    """Wait (virtual seconds, polled every 50 ms) until `predicate` holds; fail after `within`."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError(f"not true within {within:g} virtual seconds")
        await asyncio.sleep(0.05)
