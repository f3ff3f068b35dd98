"""Readiness: Docker reachable and state loaded, refreshed by one background loop.

The API reads the last result without awaiting anything, so /v1/ready stays fast even while the
engine hangs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from dtma.errors import DtmaError
from dtma.ports import EnginePing

log = structlog.get_logger(__name__)


class ReadinessMonitor:
    """Pings the engine every `interval` seconds. One instance per agent; not thread-safe."""

    def __init__(self, engine: EnginePing, interval: float = 5.0, timeout: float = 5.0) -> None:
        self._engine = engine
        self._interval = interval
        self._timeout = timeout
        self._docker_error: str | None = "not checked yet"
        self._state_loaded = False
        self._checks: list[Callable[[], list[str]]] = []

    def add_check(self, check: Callable[[], list[str]]) -> None:
        """More reasons not to be ready ("area: why"), read synchronously on each check."""
        self._checks.append(check)

    def mark_state_loaded(self) -> None:
        self._state_loaded = True

    def check(self) -> list[str]:
        reasons = []
        if self._docker_error:
            reasons.append(f"docker: {self._docker_error}")
        if not self._state_loaded:
            reasons.append("state: not loaded")
        for extra in self._checks:
            reasons.extend(extra())
        return reasons

    async def probe_once(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._engine.ping()
        except (DtmaError, TimeoutError) as exc:
            message = str(exc) or "ping timed out"
            if message != self._docker_error:
                log.warning("docker_unreachable", error=message)
            self._docker_error = message
        else:
            if self._docker_error:
                log.info("docker_reachable")
            self._docker_error = None

    async def run(self) -> None:
        """Loop until cancelled."""
        while True:
            await self.probe_once()
            await asyncio.sleep(self._interval)
