"""Ending a task for good.

A single Task.cancel() can be lost: cancelled at the wrong moment inside a probe's anyio
`fail_after` + httpx stack, probe_http returns a failed result instead of raising, and a loop
around it carries on (reproduced about 1 in 200 cancels on this project's machines). A plain
`task.cancel(); await task` then waits until something else ends the loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

RECANCEL_S = 0.5


async def cancel_and_wait(task: asyncio.Task[Any], *, every: float = RECANCEL_S) -> None:
    """Cancel `task` until it has ended (again every `every` seconds while it runs). Its
    result or exception is consumed and dropped. Cancelling the caller cancels the wait only."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every)
    if not task.cancelled():
        task.exception()  # retrieved: never "exception was never retrieved"
