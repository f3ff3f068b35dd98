"""Supervised background tasks (the re-list loop, the event watcher, each server's supervision,
a toolbox's phase write).

A task body that raises, or a loop that returns although it should run forever, is logged with
its traceback, counted in `dtma_background_task_failures_total`, reported by `down()` (which
makes /v1/ready answer 503) until it runs again, and restarted after an exponential backoff.
Nothing is swallowed. Cancellation (agent shutdown, a server halted) ends the task for good.
One-shot tasks that must not be restarted (an operation, a slow recovery, the MCP endpoint's
session manager, which its route recreates) go through `watch_task`: a failure is logged and
counted, never left in an unretrieved task.
Concurrency: one Supervisor per agent, used from the event loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from dtma.cancellation import raise_if_cancelling
from dtma.observability.metrics import METRICS

log = structlog.get_logger(__name__)

BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
HEALTHY_RUN_S = 60.0  # a body that ran this long before failing starts the backoff over


def backoff_delay(failures: int, base: float = BACKOFF_S, cap: float = MAX_BACKOFF_S) -> float:
    """Delay before restart number `failures` (1, 2, ...): base * 2^(n-1), capped. Pure."""
    return float(min(cap, base * 2 ** max(0, failures - 1)))


class Supervisor:
    def __init__(
        self,
        *,
        base: float = BACKOFF_S,
        cap: float = MAX_BACKOFF_S,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._base = base
        self._cap = cap
        self._clock = clock
        self._down: dict[str, str] = {}
        self._spawned: set[asyncio.Task[None]] = set()

    def down(self) -> list[str]:
        """Readiness reasons, one per task that is down right now (empty when all run)."""
        return [f"task: {name} {why}" for name, why in sorted(self._down.items())]

    def spawn(
        self, name: str, kind: str, body: Callable[[], Awaitable[None]], *, forever: bool = True
    ) -> asyncio.Task[None]:
        """run() in a task of its own, held here until it ends (so it is never collected while
        it runs); stop() cancels what is left."""
        task = asyncio.get_running_loop().create_task(
            self.run(name, kind, body, forever=forever), name=name
        )
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
        return task

    async def stop(self) -> None:
        """Cancel every spawned task and wait for them. Idempotent."""
        tasks = list(self._spawned)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run(
        self, name: str, kind: str, body: Callable[[], Awaitable[None]], *, forever: bool = True
    ) -> None:
        """Run `body` until cancelled, restarting it when it fails (or, with `forever`, when it
        returns). Without `forever`, a normal return ends the supervision."""
        now = self._clock or asyncio.get_running_loop().time
        failures = 0
        try:
            while True:
                started = now()
                try:
                    await body()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    raise_if_cancelling()  # a cancel the body swallowed still ends supervision
                    log.exception("background_task_failed", task=name)
                    why = f"failed ({type(exc).__name__})"
                else:
                    if not forever:
                        return
                    log.error("background_task_ended", task=name)
                    why = "ended unexpectedly"
                METRICS.task_failures.labels(kind).inc()
                failures = 1 if now() - started >= HEALTHY_RUN_S else failures + 1
                delay = backoff_delay(failures, self._base, self._cap)
                self._down[name] = f"{why}; restarting in {delay:g}s"
                await asyncio.sleep(delay)
                self._down.pop(name, None)
                log.info("background_task_restarted", task=name, attempt=failures)
        finally:
            self._down.pop(name, None)


def watch_task(task: asyncio.Task[Any], name: str, kind: str) -> None:
    """For a one-shot task that is not restarted: when it ends with an exception, log it with
    its traceback and count it in dtma_background_task_failures_total. Cancellation is not a
    failure."""

    def done(t: asyncio.Task[Any]) -> None:
        if t.cancelled():
            return
        exc = t.exception()
        if exc is not None:
            log.error("background_task_failed", task=name, exc_info=exc)
            METRICS.task_failures.labels(kind).inc()

    task.add_done_callback(done)
