"""Engine-level Docker calls (ping, version), run in worker threads."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

from dtma.adapters.docker_client import call, make_docker_client


@dataclass(frozen=True)
class EngineInfo:
    version: str
    api_version: str
    os: str
    arch: str


class DockerEngine:
    """Async facade over one docker-py client. Safe to share between tasks.

    The client is created lazily on first use (creating it talks to the engine). docker-py's
    client is thread-safe for independent requests, so calls may run concurrently in threads.
    """

    def __init__(self, docker_host: str | None) -> None:
        self._docker_host = docker_host
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        """The docker-py client. Blocking on first call; call it from a worker thread."""
        with self._lock:
            if self._client is None:
                self._client = call("connect", lambda: make_docker_client(self._docker_host))
            return self._client

    async def ping(self) -> None:
        """Raise DockerUnavailable unless the engine answers."""
        await asyncio.to_thread(lambda: call("ping", lambda: self.client().ping()))

    async def info(self) -> EngineInfo:
        raw = await asyncio.to_thread(lambda: call("version", lambda: self.client().version()))
        return EngineInfo(
            version=str(raw.get("Version", "?")),
            api_version=str(raw.get("ApiVersion", "?")),
            os=str(raw.get("Os", "?")),
            arch=str(raw.get("Arch", "?")),
        )

    async def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)
