"""Watching containers after the gate: the Docker event stream (a crash is seen within about a
second), a periodic re-list as a backstop for missed events, and the orphan reaper.

The reaper sees only this agent's containers and networks (the runtime filters by the
dtma.agent label) and removes those no toolbox wants after the grace period. Containers made
before agent ids (no dtma.agent) are reaped only when they belong to a toolbox of this agent;
others are left alone and logged once. What the hold names (orphans of this agent's id found
when it started on an empty state dir) is never reaped until the hold is released.

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
from dtma.engine.engine_watch import EngineWatch
from dtma.engine.journal import Journal
from dtma.engine.orphan_hold import OrphanHold
from dtma.engine.secrets import SecretInjector
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.errors import DockerUnavailable, DtmaError
from dtma.ports import ContainerRuntime as Runtime

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
        engine: EngineWatch,
    ) -> None:
        self._runtime = runtime
        self._engine = engine  # told when the stream breaks or a re-list fails
        self._runners = runners  # the agent's live mapping, read-only here
        self._journal = journal
        self._secrets = secrets
        self._clock = clock
        self._relist_interval = relist_interval
        self._reap_grace = reap_grace
        self._unwanted_since: dict[str, float] = {}
        self._relisting = asyncio.Lock()  # relist_once: one pass at a time
        self._ignored_legacy: set[str] = set()
        self.hold = OrphanHold()

    async def watch_events(self, source: Callable[[], AsyncIterator[dict[str, Any]]]) -> None:
        """Dispatch exit events until cancelled; reconnect when the stream breaks."""
        while True:
            try:
                async for event in source():
                    self.dispatch(event)
            except DockerUnavailable as exc:  # could not open it
                log.warning("event_stream_unavailable", error=exc.message)
                self._engine.suspect()
            except DtmaError as exc:
                # It was open and ended: events may have been missed, and a daemon restart
                # always ends it, however quick.
                log.warning("event_stream_broken", error=exc.message)
                self._engine.lost("the Docker event stream ended")
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
                self._engine.suspect()

    async def relist_once(self) -> None:
        """Backstop for missed events, and the orphan reaper (after its grace period). One pass
        at a time: two passes over one listing would reap a container twice."""
        async with self._relisting:
            await self._relist()

    async def _relist(self) -> None:
        containers = await self._runtime.list_managed(brief=True)
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
            if c.id in self.hold.containers:
                continue
            if not c.agent and owner is None:
                self._ignore_legacy(c)
                continue
            if owner is not None and c.id in owner.known_container_ids():
                continue
            if owner is not None and owner.lock.locked():
                continue  # an operation is creating or removing containers right now
            first = self._unwanted_since.setdefault(c.id, now)
            if now - first >= self._reap_grace:
                await self._reap(c)
        seen |= await self._reap_networks(now)
        for key in list(self._unwanted_since):
            if key not in seen:
                del self._unwanted_since[key]
        if self._secrets is not None:  # backstop: secret files of containers that are gone
            await self._secrets.files.sweep({c.name for c in containers})
            # Values every listed container (running or not) holds stay masked.
            self._secrets.forget_unused({c.secrets_hash for c in containers if c.secrets_hash})

    async def _reap_networks(self, now: float) -> set[str]:
        """Reap this agent's toolbox networks that no toolbox owns, after the grace period.
        Returns the keys it tracks. A network still in use is retried on the next pass."""
        seen = set()
        for net in await self._runtime.list_networks():
            key = "net:" + net.id
            seen.add(key)
            if net.toolbox in self._runners or net.name in self.hold.networks:
                continue
            first = self._unwanted_since.setdefault(key, now)
            if now - first < self._reap_grace:
                continue
            try:
                await self._runtime.remove_network(net.toolbox, legacy=False)
            except DtmaError as exc:
                log.warning("orphan_network_not_removed", network=net.name, error=exc.message)
                continue
            self._unwanted_since.pop(key, None)
            await self._journal.emit(
                ev.ORPHAN_REAPED,
                toolbox=net.toolbox or None,
                reason="not_wanted",
                message=f"network {net.name} ({net.subnet}) after {self._reap_grace:g}s",
            )
        return seen

    def _ignore_legacy(self, c: ObservedContainer) -> None:
        if c.id not in self._ignored_legacy:
            self._ignored_legacy.add(c.id)
            log.warning(
                "legacy_container_ignored",
                container=c.name,
                toolbox=c.toolbox,
                message="dtma labels without dtma.agent and no toolbox of this agent wants it: "
                "left alone (never reaped); remove it by hand if it is nobody's",
            )

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
