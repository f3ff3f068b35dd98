"""Protocols between the engine/API and the adapters. The engine and API import only these."""

from __future__ import annotations

from typing import Protocol


class EnginePing(Protocol):
    async def ping(self) -> None:
        """Return if the container engine answers; raise DockerUnavailable otherwise."""


class Readiness(Protocol):
    def check(self) -> list[str]:
        """Reasons the agent is not ready; an empty list means ready. Never blocks."""
