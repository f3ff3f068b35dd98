"""The shared docker-py client, the bounded thread pools its calls run in, and engine-level
calls (ping, version).

Two pools, so that a burst of container work cannot starve stdio attaches (and so the probes that
wait on them), and neither competes with asyncio's default executor: `run()` for every Engine API
call, `attach_pool` for opening attach sockets. docker-py's connection pool is sized for both, so
a call never waits for a free HTTP connection while its thread is idle.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from dtma.adapters.docker_client import call, make_docker_client, preflight

T = TypeVar("T")


def default_docker_threads() -> int:
    """Concurrent Engine API calls: dockerd does the work, so a few per core, at least 8."""
    return max(8, 4 * (os.cpu_count() or 1))


DEFAULT_ATTACH_THREADS = 8  # an attach is an HTTP upgrade: quick, but must never queue behind


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

    def __init__(
        self,
        docker_host: str | None,
        *,
        threads: int | None = None,
        attach_threads: int = DEFAULT_ATTACH_THREADS,
    ) -> None:
        self._docker_host = docker_host
        self._client: Any = None
        self._lock = threading.Lock()
        self.threads = threads or default_docker_threads()
        self._calls = ThreadPoolExecutor(self.threads, thread_name_prefix="dtma-docker")
        # Sized per engine; used by StdioProbeSession (mcp_probe.py) to open attach sockets.
        self.attach_pool = ThreadPoolExecutor(attach_threads, thread_name_prefix="dtma-attach")
        # Pings never queue behind image pulls or create bursts: a busy engine is not a gone one.
        self._ping_pool = ThreadPoolExecutor(2, thread_name_prefix="dtma-ping")
        # One HTTP connection per thread that may hold one (pings too), plus the event stream.
        self._max_connections = self.threads + attach_threads + 4

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking docker-py call in the Docker pool (bounded; FIFO when all are busy)."""
        return await asyncio.get_running_loop().run_in_executor(self._calls, fn, *args)

    def client(self) -> Any:
        """The docker-py client. Blocking on first call; call it from a worker thread."""
        with self._lock:
            if self._client is None:
                self._client = call(
                    "connect",
                    lambda: make_docker_client(
                        self._docker_host, max_pool_size=self._max_connections
                    ),
                )
            return self._client

    async def ping(self) -> None:
        """Raise DockerUnavailable unless the engine answers, on a new connection as well as
        on the pooled one (a daemon shutting down still answers on open connections)."""

        def ping() -> None:
            preflight(self._docker_host)
            call("ping", lambda: self.client().ping())

        await asyncio.get_running_loop().run_in_executor(self._ping_pool, ping)

    async def info(self) -> EngineInfo:
        raw = await self.run(lambda: call("version", lambda: self.client().version()))
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
            await self.run(client.close)
