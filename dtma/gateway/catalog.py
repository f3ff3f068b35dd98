"""Prompts and resources of a toolbox's serving servers, for its MCP endpoint (issue 11, item 2).

The same rules as tools (gateway.py): only the serving revision's healthy servers count, read
live on every request, and a server that cannot answer right now is left out of a listing.
- Prompts are exported as `<server>__<prompt>`, like tools.
- Resource URIs are exported as `dtma://<server>/<the server's own URI>`, and resource templates
  the same way (the prefix is literal text, so a client expands the rest of the template as
  before). Two servers may offer the same URI (`file:///data`); the prefix keeps them apart and
  routes a read without any state: everything after `dtma://<server>/` goes to that server as it
  is. The `uri` of each content block a read returns is exported the same way. URIs inside
  prompt messages and tool results are passed on unchanged.
- `gateway.tools.allow|deny` applies to tools only.
- A server whose capabilities offer neither prompts nor resources is not asked for them; one
  whose capabilities are unknown (a stdio session adopted after an agent restart has no new
  handshake) is asked, and a "method not found" answer counts as none.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from dtma.engine.server_runner import ServerRunner
from dtma.errors import NotFound
from dtma.gateway.routing import LIST_TIMEOUT_S, EngineGateway, ToolGateway, split_name
from dtma.gateway.routing import exported_name as exported_prompt

URI_SCHEME = "dtma://"
CATALOG = ("prompts", "resources")


class UnknownEntry(NotFound):
    """No serving server by that name, or a name or URI not in the exported form."""

    code = "not_found"


def exported_uri(server: str, uri: str) -> str:
    return f"{URI_SCHEME}{server}/{uri}"


def split_uri(uri: str) -> tuple[str, str] | None:
    """(server, the server's own URI) of an exported URI or template, else None."""
    if not uri.startswith(URI_SCHEME):
        return None
    server, sep, rest = uri[len(URI_SCHEME) :].partition("/")
    return (server, rest) if sep and server and rest else None


class McpGateway(ToolGateway, Protocol):
    """Everything the MCP endpoint may ask of the engine: tools, prompts and resources."""

    def instances(self, toolbox_id: str) -> frozenset[tuple[str, str]]: ...
    async def offers(self, toolbox_id: str) -> frozenset[str]: ...
    async def prompts(self, toolbox_id: str) -> list[dict[str, Any]]: ...
    async def get_prompt(
        self, toolbox_id: str, name: str, arguments: dict[str, str] | None
    ) -> dict[str, Any]: ...
    async def resources(self, toolbox_id: str) -> list[dict[str, Any]]: ...
    async def resource_templates(self, toolbox_id: str) -> list[dict[str, Any]]: ...
    async def read_resource(self, toolbox_id: str, uri: str) -> dict[str, Any]: ...


class CatalogGateway(EngineGateway):
    """EngineGateway plus prompts and resources. Holds no state; safe from any task."""

    async def offers(self, toolbox_id: str) -> frozenset[str]:
        """What the serving servers offer together (unknown capabilities count as offering)."""
        found: set[str] = set()
        for offered in await self._offers(self._serving(toolbox_id)[0]):
            found |= offered
        return frozenset(found)

    async def prompts(self, toolbox_id: str) -> list[dict[str, Any]]:
        return [
            {**p, "name": exported_prompt(server, str(p.get("name", "")))}
            for server, p in await self._gather(toolbox_id, "prompts", "prompts/list", "prompts")
        ]

    async def get_prompt(
        self, toolbox_id: str, name: str, arguments: dict[str, str] | None
    ) -> dict[str, Any]:
        parts = split_name(name)
        if parts is None:
            raise UnknownEntry(f"unknown prompt {name!r}: names are <server>__<prompt>")
        runner = self._runner(toolbox_id, parts[0], f"prompt {name!r}")
        params: dict[str, Any] = {"name": parts[1]}
        if arguments is not None:
            params["arguments"] = arguments
        return await runner.catalog_request("prompts/get", params)

    async def resources(self, toolbox_id: str) -> list[dict[str, Any]]:
        found = await self._gather(toolbox_id, "resources", "resources/list", "resources")
        return [{**r, "uri": exported_uri(server, str(r.get("uri", "")))} for server, r in found]

    async def resource_templates(self, toolbox_id: str) -> list[dict[str, Any]]:
        found = await self._gather(
            toolbox_id, "resources", "resources/templates/list", "resourceTemplates"
        )
        return [
            {**t, "uriTemplate": exported_uri(server, str(t.get("uriTemplate", "")))}
            for server, t in found
        ]

    async def read_resource(self, toolbox_id: str, uri: str) -> dict[str, Any]:
        parts = split_uri(uri)
        if parts is None:
            raise UnknownEntry(f"unknown resource {uri!r}: URIs are {URI_SCHEME}<server>/<uri>")
        server, own = parts
        runner = self._runner(toolbox_id, server, f"resource {uri!r}")
        result = await runner.catalog_request("resources/read", {"uri": own})
        contents = [
            {**c, "uri": exported_uri(server, str(c["uri"]))} if "uri" in c else c
            for c in result.get("contents", [])
        ]
        return {**result, "contents": contents}

    # -- helpers --------------------------------------------------------------------------------

    def _runner(self, toolbox_id: str, server: str, what: str) -> ServerRunner:
        tb = self._runners.get(toolbox_id)
        if tb is None:
            raise NotFound(f"toolbox {toolbox_id} not found")
        runner = tb.servers.get(server)
        if runner is None:
            raise UnknownEntry(f"unknown {what}: no server {server!r} in this toolbox")
        return runner  # catalog_request raises ServerUnavailable (retryable) if not serving

    async def _offers(self, runners: list[ServerRunner]) -> list[frozenset[str]]:
        answers = await asyncio.gather(*(r.offers() for r in runners), return_exceptions=True)
        offered: list[frozenset[str]] = []
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, Exception):
                raise answer
            if isinstance(answer, Exception):
                offered.append(frozenset())  # not reachable now: left out
            else:
                offered.append(frozenset(CATALOG) if answer is None else answer)
        return offered

    async def _gather(
        self, toolbox_id: str, capability: str, method: str, key: str
    ) -> list[tuple[str, dict[str, Any]]]:
        """Every item of `method` from every serving server that offers `capability`, in server
        order; a server that fails or does not know the method is left out."""
        runners = self._serving(toolbox_id)[0]
        offered = await self._offers(runners)
        asked = [r for r, o in zip(runners, offered, strict=True) if capability in o]
        answers = await asyncio.gather(
            *(r.catalog_request(method, None, LIST_TIMEOUT_S) for r in asked),
            return_exceptions=True,
        )
        found: list[tuple[str, dict[str, Any]]] = []
        for runner, answer in zip(asked, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer
                continue  # restarting, going away, or "method not found"
            found.extend((runner.name, item) for item in answer.get(key, []))
        return found
