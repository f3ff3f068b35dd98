"""Watching containers after the gate: the Docker event stream (a crash is seen within about a
second), a periodic re-list as a backstop for missed events, and the orphan reaper.

Concurrency: both loops run on the event loop and only call runners' synchronous
`on_container_exit`, which never blocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import structlog

from dtma.domain.containers import LABEL_TOOLBOX, ObservedContainer
from dtma.engine import event_kinds as ev
from dtma.engine.journal import Journal
from dtma.engine.secrets import SecretInjector
from dtma.engine.toolbox_runner import Runtime, ToolboxRunner
from dtma.errors import DtmaError

log = structlog.get_logger(__name__)

EXIT_ACTIONS = frozenset({"die", "oom", "destroy"})
STREAM_RETRY_S = 1.0


class ContainerWatcher:
    def __init__(
        self,
        runtime: Runtime,
        runners: Mapping[str, ToolboxRunner],
        journal: Journal,
        secrets: SecretInjector | None,
        clock: Callable[[], float],
        relist_interval: float,
        reap_grace: float,
    ) -> None:
        self._runtime = runtime
        self._runners = runners  # the agent's live mapping, read-only here
        self._journal = journal
        self._secrets = secrets
        self._clock = clock
        self._relist_interval = relist_interval
        self._reap_grace = reap_grace
        self._unwanted_since: dict[str, float] = {}

    async def watch_events(self, source: Callable[[], AsyncIterator[dict[str, Any]]]) -> None:
        """Dispatch exit events until cancelled; reconnect when the stream breaks."""
        while True:
            try:
                async for event in source():
                    self.dispatch(event)
            except DtmaError as exc:
                log.warning("event_stream_broken", error=exc.message)
            await asyncio.sleep(STREAM_RETRY_S)

    def dispatch(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        if action not in EXIT_ACTIONS:
            return
        attrs = (event.get("Actor") or {}).get("Attributes") or {}
        tb = self._runners.get(attrs.get(LABEL_TOOLBOX, ""))
        if tb is None:
            return
        code = attrs.get("exitCode")
        tb.on_container_exit(str(event.get("id") or ""), int(code) if code is not None else None)

    async def relist_loop(self) -> None:
        while True:
            await asyncio.sleep(self._relist_interval)
            try:
                await self.relist_once()
            except DtmaError as exc:
                log.warning("relist_failed", error=exc.message)

    async def relist_once(self) -> None:
        """Backstop for missed events, and the orphan reaper (after its grace period)."""
        containers = await self._runtime.list_managed()
        now = self._clock()
        by_id = {c.id: c for c in containers}
        for tb in list(self._runners.values()):
            for cid in tb.known_container_ids():
                c = by_id.get(cid)
                if c is None:  # maybe created after the listing: ask once more
                    c = await self._runtime.inspect(cid)
                    if c is None:
                        tb.on_container_exit(cid, None)
                        continue
                if c.state in ("exited", "dead"):
                    tb.on_container_exit(cid, c.exit_code)
        seen: set[str] = set()
        for c in containers:
            seen.add(c.id)
            owner = self._runners.get(c.toolbox)
            if owner is not None and c.id in owner.known_container_ids():
                continue
            if owner is not None and owner.lock.locked():
                continue  # an operation is creating or removing containers right now
            first = self._unwanted_since.setdefault(c.id, now)
            if now - first >= self._reap_grace:
                await self._reap(c)
        for cid in list(self._unwanted_since):
            if cid not in seen:
                del self._unwanted_since[cid]
        if self._secrets is not None:  # backstop: secret files of containers that are gone
            await self._secrets.files.sweep({c.name for c in containers})
            # Values every listed container (running or not) holds stay masked.
            self._secrets.forget_unused({c.secrets_hash for c in containers if c.secrets_hash})

    async def _reap(self, c: ObservedContainer) -> None:
        await self._runtime.remove(c.id)
        if self._secrets is not None:
            await self._secrets.files.remove(c.name)
        self._unwanted_since.pop(c.id, None)
        await self._journal.emit(
            ev.ORPHAN_REAPED,
            toolbox=c.toolbox or None,
            server=c.server or None,
            revision=c.revision,
            reason="not_wanted",
            message=f"container {c.id[:12]} ({c.name}) after {self._reap_grace:g}s",
        )
