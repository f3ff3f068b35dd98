"""Readiness: the engine answers (engine/engine_watch.py) and state has loaded, plus whatever
else is checked in (a supervised task that is down, say).

The API reads it without awaiting anything, so /v1/ready stays fast even while the engine hangs.
"""

from __future__ import annotations

from collections.abc import Callable

from dtma.engine.engine_watch import EngineWatch


class ReadinessMonitor:
    """One instance per agent; event loop only."""

    def __init__(self, engine: EngineWatch) -> None:
        self._engine = engine
        self._state_loaded = False
        self._checks: list[Callable[[], list[str]]] = []

    def add_check(self, check: Callable[[], list[str]]) -> None:
        """More reasons not to be ready ("area: why"), read synchronously on each check."""
        self._checks.append(check)

    def mark_state_loaded(self) -> None:
        self._state_loaded = True

    def check(self) -> list[str]:
        reasons = []
        problem = self._engine.problem()
        if problem:
            reasons.append(f"docker: {problem}")
        if not self._state_loaded:
            reasons.append("state: not loaded")
        for extra in self._checks:
            reasons.extend(extra())
        return reasons
