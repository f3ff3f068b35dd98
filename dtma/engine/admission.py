"""Admission control: how many servers of the whole agent may be starting at once.

A burst of applies (say 100 toolboxes at once) otherwise starts every container together, and on
a small host each server then takes so long to boot that gates time out. A slot is taken before a
container is created and given back once the server first answers its probe (or exits, fails to
start, reaches its deadline or the gate ends), so the host works through the burst at the pace it
allows. A server's healthy_deadline counts from its own container start (domain/gate.py), so time
spent waiting for a slot never fails a gate.

Waiters are served first come, first served (asyncio.Semaphore). Runs on the event loop only.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


def default_max_starts() -> int:
    """Servers starting at once: enough to keep every core busy while the next ones wait on
    dockerd (create, network) rather than on a slot. At 4 per core, bursts of 20 on 2 cores ran
    in visible waves with idle CPU between them (docs/benchmarks.md)."""
    return 8 * (os.cpu_count() or 1)


class Slot:
    """One admitted start. release() is idempotent."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    def release(self) -> None:
        if self._admission is not None:
            self._admission._release()
            self._admission = None


class Admission:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("admission limit must be at least 1")
        self.limit = limit
        self._sem = asyncio.Semaphore(limit)
        self.waiting = 0

    @property
    def starting(self) -> int:
        """Slots in use now."""
        return self.limit - self._sem._value

    async def acquire(self) -> Slot:
        """Wait for a slot (cancellable; a cancelled waiter holds nothing)."""
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        return Slot(self)

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """A slot for the duration of the block (a start whose probing begins later)."""
        slot = await self.acquire()
        try:
            yield
        finally:
            slot.release()

    def _release(self) -> None:
        self._sem.release()
