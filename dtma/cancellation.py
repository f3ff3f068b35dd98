"""Cancellation that is never lost.

A task cancelled while an anyio task group (the MCP SDK's transports and sessions) is open can
see the CancelledError replaced by an ExceptionGroup, when one of the group's children raises
during its own cleanup (a closed stream, a reset connection). Code that catches `Exception` to
grade a probe would then carry on as if nothing had happened, and whoever cancelled the task and
awaits it (halting a server, ending a gate) waits for ever. Two rules prevent it:

- every `except Exception` around SDK or network work calls `raise_if_cancelling()` first;
- whoever stops a task uses `cancel_and_wait()`, which repeats the cancel until the task ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

NUDGE_S = 1.0  # how often a cancel is repeated while the task has not ended


def raise_if_cancelling() -> None:
    """Raise CancelledError if the current task has a cancel request nobody consumed (the
    request was swallowed on its way out); otherwise do nothing."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(task: asyncio.Task[Any] | None, *, nudge: float = NUDGE_S) -> None:
    """Cancel `task` and wait until it has ended, cancelling it again every `nudge` seconds if
    it has not (a cancel it swallowed). Its result or exception is discarded. Idempotent."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=nudge)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


@contextlib.contextmanager
def suppress_failures() -> Iterator[None]:
    """`contextlib.suppress(Exception)` for best-effort work, except that a cancel the work
    swallowed is raised again."""
    try:
        yield
    except Exception:
        raise_if_cancelling()
