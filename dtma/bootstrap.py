"""The one place that wires adapters into the engine and the API, and runs the agent."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog
from aiohttp import web

from dtma import __version__
from dtma.adapters.docker_engine import DockerEngine
from dtma.adapters.sqlite_store import SqliteStateStore
from dtma.api.app import create_app
from dtma.api_token import resolve_api_token
from dtma.config import Settings
from dtma.engine.readiness import ReadinessMonitor
from dtma.errors import ConfigError

log = structlog.get_logger("dtma.agent")


async def serve(settings: Settings) -> None:
    """Run the agent until SIGTERM or SIGINT. Raises ConfigError if it cannot start."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    token = resolve_api_token(settings)
    store = SqliteStateStore.in_state_dir(settings.state_dir)
    engine = DockerEngine(settings.docker_host)
    readiness = ReadinessMonitor(engine)
    runner: web.AppRunner | None = None
    tasks: list[asyncio.Task[None]] = []
    try:
        schema = await store.open()
        readiness.mark_state_loaded()
        tasks.append(asyncio.create_task(readiness.run(), name="readiness"))

        runner = web.AppRunner(
            create_app(token=token.value, readiness=readiness),
            access_log=None,
            handle_signals=False,
        )
        await runner.setup()
        site = web.TCPSite(runner, settings.listen_host, settings.listen_port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {settings.listen}: {exc.strerror}") from None

        log.info(
            "agent_started",
            version=__version__,
            listen=settings.listen,
            state_db=str(store.path),
            schema_version=schema,
            api_token=token.source,
        )
        await _wait_for_stop_signal()
        log.info("agent_stopping")
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if runner is not None:
            await runner.cleanup()
        await engine.close()
        await store.close()
    log.info("agent_stopped")


async def _wait_for_stop_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
