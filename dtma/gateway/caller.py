"""Who calls a toolbox's MCP endpoint, as its handlers see it, and what `gateway.access` lets
a JWT caller use. The aiohttp handler puts the caller in the ASGI scope (CALLER_SCOPE_KEY);
the SDK hands it back to the tools/list and tools/call handlers on `ctx.request.scope`.
Callers with dtma's own tokens have no JwtCaller and are never narrowed here."""

from __future__ import annotations

from typing import Any

from dtma.domain.oauth import JwtCaller, tool_permitted
from dtma.gateway.routing import GatewayTool, ToolGateway

CALLER_SCOPE_KEY = "dtma.caller"


def caller_of(ctx: Any) -> JwtCaller | None:
    """The JWT caller of this request, if a JWT opened it."""
    scope = getattr(getattr(ctx, "request", None), "scope", None) or {}
    caller = scope.get(CALLER_SCOPE_KEY)
    return caller if isinstance(caller, JwtCaller) else None


def visible(
    gateway: ToolGateway, toolbox: str, caller: JwtCaller | None, tools: list[GatewayTool]
) -> list[GatewayTool]:
    if caller is None:
        return tools
    rules = gateway.access_rules(toolbox)
    return [t for t in tools if tool_permitted(t.name, rules, caller.claims)]


def may_call(gateway: ToolGateway, toolbox: str, caller: JwtCaller | None, name: str) -> bool:
    if caller is None:
        return True
    return tool_permitted(name, gateway.access_rules(toolbox), caller.claims)
