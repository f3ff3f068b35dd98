"""The read side of the Agent facade (engine/agent.py): status, listings, agent info, gauges,
tool lists and logs. Reads only: nothing here changes a toolbox, starts a task or creates a
runner (a toolbox known to the state DB but not yet in memory reads as having no servers).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from dtma import __version__
from dtma.domain.records import ToolboxListing
from dtma.engine.journal import Journal
from dtma.engine.status_view import ListingCache, status_fields, toolbox_status
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.engine.watcher import ContainerWatcher
from dtma.errors import DtmaError, NotFound
from dtma.ports import ContainerRuntime, StateStore
from dtma.spec.validate import SpecPolicy, validate_toolbox_id


class AgentReads:
    """What the API reads from the agent. The Agent sets these attributes in its constructor."""

    agent_id: str
    runtime: ContainerRuntime
    repo: StateStore
    journal: Journal
    policy: SpecPolicy
    watcher: ContainerWatcher
    # The heartbeat loop's status for GET /v1/agent (engine/heartbeat.py); None: no controller.
    controller: Callable[[], dict[str, Any]] | None
    _runners: dict[str, ToolboxRunner]
    _listing: ListingCache

    async def status(self, toolbox_id: str) -> dict[str, Any]:
        validate_toolbox_id(toolbox_id)
        record = await self.repo.toolbox(toolbox_id)
        if record is None:
            raise NotFound(f"no toolbox {toolbox_id}")
        latest = await self.repo.latest_revision(toolbox_id)
        return self._status(
            (
                toolbox_id,
                record.phase,
                record.stable_revision,
                record.updated_at,
                latest.number if latest else None,
            )
        )

    def _status(self, row: ToolboxListing) -> dict[str, Any]:
        return toolbox_status(row, self._runners.get(row[0]), self.journal.redact)

    async def info(self) -> dict[str, Any]:
        """Version, host, Docker version (None while unreachable) and counts."""
        try:
            version, api = await self.runtime.engine_version()
            docker: dict[str, str] | None = {"version": version, "api_version": api}
        except DtmaError:
            docker = None
        phases: dict[str, int] = {}
        for tb in self._runners.values():
            phases[tb.phase] = phases.get(tb.phase, 0) + 1
        return {
            "version": __version__,
            "agent_id": self.agent_id,
            "orphans": self.watcher.hold.describe(),
            "host": socket.gethostname(),
            "docker": docker,
            "toolboxes": len(self._runners),
            "servers": sum(len(tb.servers) for tb in self._runners.values()),
            "phases": phases,
            "policy": self.policy.describe(),
            "controller": self.controller() if self.controller else None,
        }

    def metrics_state(self) -> list[tuple[str, str, list[tuple[str, bool]]]]:
        """(toolbox, phase, [(server, healthy)]) for the gauges; synchronous, in memory."""
        return [
            (tb.id, tb.phase, [(r.name, r.health == "healthy") for r in tb.servers.values()])
            for tb in list(self._runners.values())
        ]

    async def statuses(self) -> list[dict[str, Any]]:
        """Every toolbox's status from one query, whatever the number of toolboxes."""
        return [self._status(row) for row in await self.repo.listing()]

    async def statuses_json(self) -> bytes:
        """`{"items": statuses()}` encoded; unchanged statuses are not encoded again
        (status_view.ListingCache), so a listing storm costs little on the event loop."""
        rows = await self.repo.listing()
        return self._listing.encode([status_fields(r, self._runners.get(r[0])) for r in rows])

    async def tools(self, toolbox_id: str) -> dict[str, list[str]]:
        await self._known(toolbox_id)
        return {
            server: tools for server, (_rev, tools) in (await self.repo.tools(toolbox_id)).items()
        }

    async def logs(self, toolbox_id: str, server: str, tail: int) -> str:
        tb = await self._known(toolbox_id)
        runner = (tb.servers.get(server) or tb.gate_runners.get(server)) if tb else None
        if runner is None:
            raise NotFound(f"toolbox {toolbox_id} has no running server {server}")
        return self.journal.redact(await self.runtime.logs(runner.container.id, tail))

    async def _known(self, toolbox_id: str) -> ToolboxRunner | None:
        """The toolbox's runner, None if it has none in memory yet. Raises NotFound if the
        state DB does not know the toolbox, and a validation error for a malformed id."""
        validate_toolbox_id(toolbox_id)
        if await self.repo.toolbox(toolbox_id) is None:
            raise NotFound(f"no toolbox {toolbox_id}")
        return self._runners.get(toolbox_id)
