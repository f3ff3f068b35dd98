"""The engine's fault class: is the Docker engine there, and did it restart under the agent?

One EngineWatch per agent owns the answer. It pings the engine (every `interval` while up,
every `fast_interval` while it is not), and hears from the event watcher when the event stream
breaks: a daemon restart always breaks it, even one quicker than a ping interval.

`epoch` counts the engine's discontinuities. It moves when the engine answers again after a
failed ping or after a break of the event stream, that is whenever containers may have stopped,
attach sessions may have ended or events may have been missed without the agent seeing it. The
listeners given to `on_back` run once per new epoch: the agent then reconciles every toolbox,
as after an adoption.

A failure seen while the engine is away is the engine's, not a server's. Before charging a
failure to a server (its restart budget, a gate), callers ask `confirm(epoch)`, which pings at
once and says whether the engine is up and still in the epoch the caller knew.

Concurrency: event loop only. Pings are coalesced: callers that ask while one is in flight
share its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from dtma.errors import DtmaError
from dtma.observability.metrics import METRICS
from dtma.ports import EnginePing

log = structlog.get_logger(__name__)

Report = Callable[[bool, str], Awaitable[None]]  # (reachable, message): an agent-level event
Listener = Callable[[int], None]  # called with the new epoch


class EngineWatch:
    def __init__(
        self,
        engine: EnginePing,
        *,
        interval: float = 5.0,
        fast_interval: float = 0.5,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._interval = interval
        self._fast = fast_interval
        self._timeout = timeout
        self._clock = clock
        self.up = False
        self.epoch = 0
        self.error: str | None = "not checked yet"
        self._checked = False
        self._broken = False  # a discontinuity not yet closed by a new epoch
        self._down_since: float | None = None  # the first sign of the current outage
        self._reported = False  # its engine_unreachable event went out
        self.last_outage_s = 0.0  # how long the last outage (closed by an epoch) lasted
        self._ping: asyncio.Task[bool] | None = None
        self._ping_generation = 0  # the `lost()` count when the ping in flight began
        self._lost_generation = 0
        self._wake = asyncio.Event()
        self._up_event = asyncio.Event()
        self._epoch_moved = asyncio.Event()
        self._listeners: list[Listener] = []
        self._report: Report | None = None

    def on_back(self, listener: Listener) -> None:
        """`listener(epoch)` runs (synchronously, on the loop) each time the epoch moves."""
        self._listeners.append(listener)

    def report_to(self, report: Report) -> None:
        """Where the outage and the return are told (the journal, as agent-level events)."""
        self._report = report

    # -- what the engine's users tell the watch ---------------------------------------------

    def lost(self, why: str) -> None:
        """The event stream broke: the daemon may have restarted. Checked at once; the epoch
        moves when the engine answers again."""
        if not self._broken:
            log.info("engine_stream_lost", reason=why)
        self._broken = True
        self._lost_generation += 1  # a ping already in flight cannot close this one
        self.error = self.error or f"{why}; checking the engine"
        self.up = False
        self._up_event.clear()
        if self._down_since is None:
            self._down_since = self._clock()
        self._wake.set()

    def suspect(self) -> None:
        """A call failed as if the engine were gone: ping now rather than at the next tick."""
        self._wake.set()

    # -- what they ask --------------------------------------------------------------------------

    async def confirm(self, epoch: int) -> bool:
        """Ping now. True when the engine answers and its epoch is still `epoch`: a failure
        seen in that epoch is not the engine's."""
        if epoch != self.epoch:
            return False
        up = await self.check()
        return up and epoch == self.epoch

    async def wait_up(self) -> None:
        await self._up_event.wait()

    async def moved_from(self, epoch: int) -> None:
        """Return once the epoch is past `epoch`."""
        while self.epoch <= epoch:
            self._epoch_moved.clear()
            await self._epoch_moved.wait()

    def problem(self) -> str | None:
        """Why the engine is not usable now (for /v1/ready), or None."""
        if self.up:
            return None
        if self._down_since is not None:
            return f"{self.error} (for {self._clock() - self._down_since:.0f}s)"
        return self.error or "checking the engine again"

    # -- the pinger -----------------------------------------------------------------------------

    async def check(self) -> bool:
        """One ping (shared with any already in flight); updates up/epoch. Never raises."""
        stale = self._ping is not None and self._ping_generation != self._lost_generation
        if self._ping is None or self._ping.done() or stale:
            self._ping_generation = self._lost_generation
            self._ping = asyncio.create_task(
                self._ping_once(self._lost_generation), name="engine-ping"
            )
        return await asyncio.shield(self._ping)

    async def _ping_once(self, generation: int) -> bool:
        try:
            async with asyncio.timeout(self._timeout):
                await self._engine.ping()
        except (DtmaError, TimeoutError) as exc:
            await self._went_down(str(exc) or f"no answer to a ping in {self._timeout:g}s")
            return False
        if generation != self._lost_generation:
            return False  # began before the stream broke: it may have been the old daemon
        await self._came_back()
        return True

    async def _went_down(self, message: str) -> None:
        self._wake.clear()
        first = not self._checked
        self._checked = True
        self.up = False
        self._up_event.clear()
        self.error = message
        if self._down_since is None:
            self._down_since = self._clock()
        if not first:
            self._broken = True  # on start, the agent's recovery is the first pass anyway
        if self._reported:
            return  # still down
        self._reported = True
        METRICS.engine_up.set(0)
        log.warning("docker_unreachable", error=message)
        await self._tell(False, message)

    async def _came_back(self) -> None:
        self._wake.clear()
        first = not self._checked
        self._checked = True
        if self.up and not self._broken:
            return
        down_for = self._clock() - self._down_since if self._down_since is not None else 0.0
        self.up, self.error, self._down_since, self._reported = True, None, None, False
        METRICS.engine_up.set(1)
        self._up_event.set()
        if first or not self._broken:
            log.info("docker_reachable")
            return
        self._broken = False
        self.epoch += 1
        self.last_outage_s = down_for
        METRICS.engine_outages.inc()
        self._epoch_moved.set()
        log.warning("docker_back", epoch=self.epoch, down_s=round(down_for, 1))
        for listener in list(self._listeners):  # first: a failed report must not lose an epoch
            try:
                listener(self.epoch)
            except Exception:
                log.exception("engine_listener_failed")
        message = (
            f"the engine answers again after {down_for:.1f}s; reconciling every toolbox "
            f"(engine epoch {self.epoch})"
        )
        await self._tell(True, message)

    async def _tell(self, reachable: bool, message: str) -> None:
        if self._report is None:
            return
        try:
            await self._report(reachable, message)
        except Exception:
            log.exception("engine_report_failed")

    async def run(self) -> None:
        """Ping until cancelled: at `interval` while up, at `fast_interval` otherwise, and at
        once when told (lost, suspect)."""
        while True:
            await self.check()
            wait = self._interval if self.up else self._fast
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
