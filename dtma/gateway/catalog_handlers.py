"""The MCP endpoint's prompts and resources handlers (naming and routing: gateway/catalog).

`catalog_handlers()` gives the SDK lowlevel `Server` its prompts/list, prompts/get,
resources/list, resources/templates/list and resources/read handlers for one toolbox. Errors map
as tools/call's do (gateway/mcp_errors.py): an unknown name or URI is invalid params, a server
that cannot answer now is the retryable -32003, and an MCP error the server itself returned
passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import mcp_types as types

from dtma.gateway.catalog import McpGateway
from dtma.gateway.mcp_errors import mcp_errors

T = TypeVar("T")


async def _answer(work: Awaitable[T]) -> T:
    with mcp_errors():
        return await work


def catalog_handlers(
    gateway: McpGateway, toolbox_id: str, remember: Callable[[Any], None]
) -> dict[str, Any]:
    """Keyword arguments for `Server(...)`. `remember(ctx)` notes the client's session."""

    async def list_prompts(
        ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        remember(ctx)
        found = await _answer(gateway.prompts(toolbox_id))
        return types.ListPromptsResult(prompts=[types.Prompt.model_validate(p) for p in found])

    async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        remember(ctx)
        result = await _answer(gateway.get_prompt(toolbox_id, params.name, params.arguments))
        return types.GetPromptResult.model_validate(result)

    async def list_resources(
        ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        remember(ctx)
        found = await _answer(gateway.resources(toolbox_id))
        return types.ListResourcesResult(
            resources=[types.Resource.model_validate(r) for r in found]
        )

    async def list_resource_templates(
        ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        remember(ctx)
        found = await _answer(gateway.resource_templates(toolbox_id))
        return types.ListResourceTemplatesResult(
            resource_templates=[types.ResourceTemplate.model_validate(t) for t in found]
        )

    async def read_resource(
        ctx: Any, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        remember(ctx)
        result = await _answer(gateway.read_resource(toolbox_id, params.uri))
        return types.ReadResourceResult.model_validate(result)

    return {
        "on_list_prompts": list_prompts,
        "on_get_prompt": get_prompt,
        "on_list_resources": list_resources,
        "on_list_resource_templates": list_resource_templates,
        "on_read_resource": read_resource,
    }


def without_unoffered(
    caps: types.ServerCapabilities, offered: frozenset[str]
) -> types.ServerCapabilities:
    """The endpoint's capabilities, less prompts/resources that no serving server offers."""
    drop = {k: None for k in ("prompts", "resources") if k not in offered}
    return caps.model_copy(update=drop) if drop else caps
