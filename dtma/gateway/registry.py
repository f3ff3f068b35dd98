"""The toolbox endpoints by toolbox id: one endpoint per toolbox, made on its first request
(gateway/endpoint.py: the official SDK's server), so sessions belong to one toolbox. The engine
is reached only through the `McpGateway` port. The SDK's server side is imported on the first
request to any endpoint, not at start: an agent whose endpoints are never used does not pay for
it (docs/benchmarks.md, "Idle agent").
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from dtma import lazy_import
from dtma.gateway.call_journal import CallJournal
from dtma.gateway.catalog import McpGateway

if TYPE_CHECKING:
    from dtma.gateway.endpoint import ToolboxEndpoint


class McpEndpoints:
    """The endpoints by toolbox id, made on first use and replaced once their toolbox is gone."""

    def __init__(self, gateway: McpGateway, audit: CallJournal | None = None) -> None:
        self._gateway = gateway
        self._audit = audit
        self._endpoints: dict[str, ToolboxEndpoint] = {}
        self._lock = asyncio.Lock()

    async def get(self, toolbox_id: str) -> ToolboxEndpoint:
        endpoint = self._endpoints.get(toolbox_id)
        if endpoint is not None and endpoint.alive:
            return endpoint
        async with self._lock:
            endpoint = self._endpoints.get(toolbox_id)
            if endpoint is None or not endpoint.alive:
                # Deferred: the SDK's server side (gateway/endpoint.py) loads with the first
                # endpoint, not with the agent, and in a thread (dtma/lazy_import.py).
                await lazy_import.load(lazy_import.MCP_SERVER)
                from dtma.gateway.endpoint import ToolboxEndpoint

                endpoint = ToolboxEndpoint(toolbox_id, self._gateway, self._audit)
                await endpoint.start()
                self._endpoints[toolbox_id] = endpoint
            return endpoint

    async def close(self) -> None:
        for endpoint in list(self._endpoints.values()):
            await endpoint.close()
        self._endpoints.clear()
