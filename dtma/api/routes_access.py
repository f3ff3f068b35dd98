"""Client tokens of a toolbox's MCP endpoint and its tool-call journal.

A token's value appears in exactly one answer, the 201 of its creation; that POST is therefore
never stored for Idempotency-Key replay (the idempotency table would hold the value).
"""

from __future__ import annotations

from aiohttp import web

from dtma.api.params import MAX_CURSOR, invalid, matches, path_label, query_int
from dtma.api.routes_toolboxes import _json_body, agent_of
from dtma.api.schemas import (
    CallsPageOut,
    TokenCreatedOut,
    TokenIn,
    TokenOut,
    TokensOut,
    ToolCallOut,
)
from dtma.domain.access import TOKEN_ID_PATTERN, ClientToken
from dtma.errors import NotFound
from dtma.gateway.call_journal import CallJournal
from dtma.gateway.tokens import AccessTokens

ACCESS = web.AppKey("access", AccessTokens)
CALLS = web.AppKey("calls", CallJournal)


def add_access_routes(app: web.Application, access: AccessTokens, calls: CallJournal) -> None:
    """Mount the routes. Loading the token index and flushing the journals is the caller's
    (bootstrap.py)."""
    app[ACCESS], app[CALLS] = access, calls
    r = app.router
    r.add_post("/v1/toolboxes/{id}/tokens", create_token)
    r.add_get("/v1/toolboxes/{id}/tokens", list_tokens)
    r.add_delete("/v1/toolboxes/{id}/tokens/{token_id}", revoke_token)
    r.add_get("/v1/toolboxes/{id}/calls", list_calls)


async def create_token(request: web.Request) -> web.Response:
    toolbox_id = path_label(request, "id")
    body = await _json_body(request, TokenIn)
    agent_of(request)  # 503 while starting
    record, value = await request.app[ACCESS].issue(toolbox_id, body.name or "")
    out = TokenCreatedOut(
        id=record.id,
        token=value,
        toolbox=record.toolbox,
        name=record.name,
        created_at=record.created_at,
    )
    return web.json_response(out.model_dump(mode="json"), status=201)


async def list_tokens(request: web.Request) -> web.Response:
    toolbox_id = path_label(request, "id")
    await _known(request, toolbox_id)
    tokens = await request.app[ACCESS].list(toolbox_id)
    return web.json_response(TokensOut(items=[_token(t) for t in tokens]).model_dump(mode="json"))


async def revoke_token(request: web.Request) -> web.Response:
    toolbox_id = path_label(request, "id")
    token_id = request.match_info["token_id"]
    if not matches(TOKEN_ID_PATTERN, token_id):
        raise invalid("path", "token_id", "must be a token id (tok- and 16 hex digits)")
    await _known(request, toolbox_id)
    await request.app[ACCESS].revoke(toolbox_id, token_id)
    return web.Response(status=204)


async def list_calls(request: web.Request) -> web.Response:
    toolbox_id = path_label(request, "id")
    since = query_int(request, "since", 0, MAX_CURSOR, 0)
    limit = query_int(request, "limit", 1, 1000, 500)
    await _known(request, toolbox_id)
    rows = await request.app[CALLS].page(toolbox_id, since, limit)
    items = [ToolCallOut.model_validate(r) for r in rows]
    page = CallsPageOut(items=items, next=items[-1].cursor if items else since)
    return web.json_response(page.model_dump(mode="json"))


async def _known(request: web.Request, toolbox_id: str) -> None:
    if await agent_of(request).repo.toolbox(toolbox_id) is None:
        raise NotFound(f"no toolbox {toolbox_id}")


def _token(t: ClientToken) -> TokenOut:
    return TokenOut(
        id=t.id, toolbox=t.toolbox, name=t.name, created_at=t.created_at, last_used=t.last_used
    )
