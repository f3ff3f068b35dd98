"""Supervised background tasks (the re-list loop, the event watcher, each server's supervision).

A task body that raises, or a loop that returns although it should run forever, is logged with
its traceback, counted in `dtma_background_task_failures_total`, reported by `down()` (which
makes /v1/ready answer 503) until it runs again, and restarted after an exponential backoff.
Nothing is swallowed. Cancellation (agent shutdown, a server halted) ends the task for good.
Concurrency: one Supervisor per agent, used from the event loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

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

    def down(self) -> list[str]:
        """Readiness reasons, one per task that is down right now (empty when all run)."""
        return [f"task: {name} {why}" for name, why in sorted(self._down.items())]

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
