"""The calls in flight on one server, and how a server's exit cuts them.

A call runs in its caller's own task: a task per call would cost two more trips through the
event loop on every tool call (bench/gateway_latency.py). When the server exits, `cut_all()`
cancels each caller while its call is in flight, and again every NUDGE_S while the call swallows
the cancel (cancellation.py). When the call ends, those cancels are withdrawn (`Task.uncancel`)
and the caller gets `cut_error()` instead of CancelledError; a caller that someone else cancelled
as well stays cancelled. Used on the event loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from dtma.cancellation import NUDGE_S
from dtma.engine.supervisor import watch_task

T = TypeVar("T")


class _Call:
    __slots__ = ("cancels", "ended", "task")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.cancels = 0  # issued by a cut, not yet withdrawn
        self.ended: asyncio.Future[None] | None = None  # made when a cut starts


class CallGuard:
    """Runs calls (`run`), counts them (`idle`) and cuts them (`cut_all`)."""

    def __init__(self, name: str, *, nudge: float = NUDGE_S) -> None:
        self._name = name
        self._nudge = nudge
        self._calls: dict[asyncio.Task[object], _Call] = {}
        self._cutters: set[asyncio.Task[None]] = set()  # held: the loop keeps weak references
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    async def idle(self) -> None:
        """Return once no call is in flight."""
        await self._idle.wait()

    async def run(self, start: Callable[[], Awaitable[T]], cut_error: Callable[[], Exception]) -> T:
        """Await `start()` in the current task; raise `cut_error()` if a cut ended it. One call
        at a time per task."""
        task = asyncio.current_task()
        if task is None or task in self._calls:
            raise RuntimeError("a guarded call needs a task of its own, one call at a time")
        call = _Call(task)
        self._calls[task] = call
        self._idle.clear()
        try:
            return await start()
        except asyncio.CancelledError:
            if call.cancels and _withdraw(call) == 0:
                raise cut_error() from None
            raise
        finally:
            if call.cancels:
                _withdraw(call)  # the call swallowed the cut and ended on its own
            if call.ended is not None and not call.ended.done():
                call.ended.set_result(None)
            del self._calls[task]
            if not self._calls:
                self._idle.set()

    def cut_all(self) -> None:
        """Cut every call in flight (see the module's docstring). Returns at once."""
        loop = asyncio.get_running_loop()
        for call in self._calls.values():
            if call.ended is not None:
                continue  # already being cut
            call.ended = loop.create_future()
            cutter = asyncio.create_task(self._cut(call), name=f"cut-call-{self._name}")
            self._cutters.add(cutter)
            cutter.add_done_callback(self._cutters.discard)
            watch_task(cutter, f"cut a call to {self._name}", "tool_call")

    async def _cut(self, call: _Call) -> None:
        assert call.ended is not None
        while not call.ended.done():
            call.cancels += 1
            call.task.cancel()
            await asyncio.wait({call.ended}, timeout=self._nudge)


def _withdraw(call: _Call) -> int:
    """Withdraw the cut's cancels from the caller's task; the count of cancels left (others')."""
    left = call.task.cancelling()
    for _ in range(call.cancels):
        left = call.task.uncancel()
    call.cancels = 0
    return left
