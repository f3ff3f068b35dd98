"""The calls in flight on one server, and how a server's exit cuts them.

A call runs in its caller's own task: a task per call would cost two more trips through the
event loop on every tool call (bench/gateway_latency.py). Each call runs inside an anyio
`CancelScope`; when the server exits, `cut_all()` cancels those scopes. anyio delivers a scope's
cancellation again on every pass of the loop while the call swallows it (as an SDK task group
sometimes does), and at the scope's exit it withdraws its own cancellations and only those: the
caller then gets `cut_error()` instead of CancelledError, and a caller that someone else
cancelled as well (its client went away) stays cancelled. Used on the event loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import anyio

T = TypeVar("T")


class CallGuard:
    """Runs calls (`run`), counts them (`idle`) and cuts them (`cut_all`)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: dict[asyncio.Task[object], anyio.CancelScope] = {}
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
        at a time per task. A call that swallows the cut and returns keeps its result."""
        task = asyncio.current_task()
        if task is None or task in self._calls:
            raise RuntimeError("a guarded call needs a task of its own, one call at a time")
        # anyio comes with the MCP SDK, loaded (dtma/lazy_import.py) before any call is made:
        # an idle agent does not hold it (tests/integration/test_idle_imports.py).
        import anyio

        self._idle.clear()
        try:
            with anyio.CancelScope() as scope:
                self._calls[task] = scope
                return await start()
        finally:
            del self._calls[task]
            if not self._calls:
                self._idle.set()
        # Reached only when the scope caught its own cancellation: the cut ended the call.
        raise cut_error()

    def cut_all(self) -> None:
        """Cut every call in flight (see the module's docstring). Returns at once; idempotent."""
        for scope in self._calls.values():
            scope.cancel()
