"""Toolbox, operation and event routes. Handlers parse and validate input, call the Agent, and
shape JSON; they never touch adapters."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from dtma.api.disconnects import cancel_on_disconnect
from dtma.api.errors import error_response
from dtma.api.idempotency import IdempotencyKeys
from dtma.api.params import (
    IF_MATCH_PATTERN,
    LAST_EVENT_ID_PATTERN,
    MAX_CURSOR,
    MAX_LOG_TAIL,
    MAX_WAIT_S,
    matches,
    path_label,
    query_float,
    query_int,
    query_label,
)
from dtma.api.schemas import OperationOut, RollbackIn, ServersIn
from dtma.api.sse import stream_events
from dtma.domain.records import OperationRecord
from dtma.engine.agent import Agent
from dtma.errors import DockerUnavailable, SpecInvalid
from dtma.spec.document import load_json

AGENT = web.AppKey("agent", Agent)
M = TypeVar("M", bound=BaseModel)


def add_routes(app: web.Application, agent: Agent) -> None:
    app[AGENT] = agent

    async def end_streams(_: web.Application) -> None:
        agent.journal.close_subscribers()

    app.on_shutdown.append(end_streams)
    r = app.router
    r.add_get("/v1/toolboxes", list_toolboxes)
    r.add_put("/v1/toolboxes/{id}", apply_toolbox)
    r.add_get("/v1/toolboxes/{id}", get_toolbox)
    r.add_delete("/v1/toolboxes/{id}", delete_toolbox)
    once = IdempotencyKeys(agent.repo).wrap
    r.add_post("/v1/toolboxes/{id}/rollback", once(rollback_toolbox))
    for kind in ("restart", "stop", "start"):
        r.add_post(f"/v1/toolboxes/{{id}}/{kind}", once(_server_op(kind)))
    r.add_post("/v1/toolboxes/{id}/secrets/refresh", once(refresh_secrets))
    r.add_get("/v1/toolboxes/{id}/revisions", list_revisions)
    r.add_get("/v1/toolboxes/{id}/tools", get_tools)
    r.add_get("/v1/toolboxes/{id}/servers/{name}/logs", get_logs)
    r.add_get("/v1/operations/{op}", get_operation)
    r.add_get("/v1/events", cancel_on_disconnect(list_events))  # read-only; streams


def agent_of(request: web.Request) -> Agent:
    agent = request.app[AGENT]
    if not agent.started:
        raise DockerUnavailable(
            "the agent is still starting (waiting for Docker or recovering "
            "toolboxes); retry shortly"
        )
    return agent


async def _json_body(request: web.Request, model: type[M]) -> M:
    """The body as `model` (strict: no coercion, no unknown fields); an empty body is {}."""
    raw = await request.read()
    if not raw.strip():
        return model()
    body = load_json(raw)
    if not isinstance(body, dict):
        raise SpecInvalid("invalid body", [{"loc": ["body"], "msg": "must be a JSON object"}])
    try:
        return model.model_validate(body, strict=True)
    except ValidationError as exc:
        details: list[dict[str, object]] = [
            {"loc": ["body", *e["loc"]], "msg": e["msg"]} for e in exc.errors()
        ]
        raise SpecInvalid("invalid body", details) from None


async def list_toolboxes(request: web.Request) -> web.Response:
    # The largest frequent answer (a hundred toolboxes): compact, and encoded once per change.
    body = await agent_of(request).statuses_json()
    return web.Response(body=body, content_type="application/json", charset="utf-8")


async def apply_toolbox(request: web.Request) -> web.Response:
    toolbox_id = path_label(request, "id")
    wait = query_float(request, "wait", 0, MAX_WAIT_S)
    if_match = request.headers.get("If-Match")
    expected = None
    if if_match is not None:
        if not matches(IF_MATCH_PATTERN, if_match.strip()):
            raise SpecInvalid(
                "invalid If-Match",
                [{"loc": ["header", "If-Match"], "msg": "must be a revision number"}],
            )
        expected = int(if_match.strip().strip('"'))
    agent = agent_of(request)
    result = await agent.apply(toolbox_id, await request.read(), expected)
    if result.unchanged:
        return web.json_response({**await agent.status(toolbox_id), "unchanged": True})
    assert result.operation is not None
    if wait:
        op = await agent.wait(result.operation, wait)
        return web.json_response(
            {**await agent.status(toolbox_id), "operation": _operation_json(op)},
            status=200 if op.state != "running" else 202,
        )
    return web.json_response(
        {"toolbox": result.toolbox, "revision": result.revision, "operation": result.operation},
        status=202,
    )


async def get_toolbox(request: web.Request) -> web.Response:
    toolbox_id = path_label(request, "id")
    return web.json_response(await agent_of(request).status(toolbox_id))


async def delete_toolbox(request: web.Request) -> web.Response:
    """202 with the operation id; with `?wait=S`, wait like PUT does: 200 with the finished
    operation, or 202 (the id) when S passes first."""
    toolbox_id = path_label(request, "id")
    wait = query_float(request, "wait", 0, MAX_WAIT_S)
    agent = agent_of(request)
    op_id = await agent.delete(toolbox_id)
    if wait and (op := await agent.wait(op_id, wait)).state != "running":
        return web.json_response({"toolbox": toolbox_id, "operation": _operation_json(op)})
    return web.json_response({"toolbox": toolbox_id, "operation": op_id}, status=202)


async def rollback_toolbox(request: web.Request) -> web.Response:
    toolbox_id = path_label(request, "id")
    body = await _json_body(request, RollbackIn)
    op = await agent_of(request).rollback(toolbox_id, body.revision)
    return web.json_response({"toolbox": toolbox_id, "operation": op}, status=202)


def _server_op(kind: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        toolbox_id = path_label(request, "id")
        body = await _json_body(request, ServersIn)
        op = await agent_of(request).server_operation(toolbox_id, kind, body.servers)
        return web.json_response({"toolbox": toolbox_id, "operation": op}, status=202)

    return handler


async def refresh_secrets(request: web.Request) -> web.Response:
    toolbox_id = path_label(request, "id")
    op = await agent_of(request).refresh_secrets(toolbox_id)
    return web.json_response({"toolbox": toolbox_id, "operation": op}, status=202)


async def list_revisions(request: web.Request) -> web.Response:
    toolbox_id = path_label(request, "id")
    agent = agent_of(request)
    await agent.status(toolbox_id)  # 404 for an unknown toolbox
    revs = await agent.repo.revisions(toolbox_id)
    return web.json_response(
        {
            "items": [
                {
                    "revision": r.number,
                    "stable": r.stable,
                    "created_at": r.created_at,
                    "spec_hash": r.spec_hash,
                    "spec": json.loads(r.spec),
                }
                for r in revs
            ]
        }
    )


async def get_tools(request: web.Request) -> web.Response:
    toolbox_id = path_label(request, "id")
    tools = await agent_of(request).tools(toolbox_id)
    return web.json_response(
        {"servers": [{"name": n, "tools": t} for n, t in sorted(tools.items())]}
    )


async def get_logs(request: web.Request) -> web.Response:
    toolbox_id, server = path_label(request, "id"), path_label(request, "name")
    tail = query_int(request, "tail", 1, MAX_LOG_TAIL, 100)
    text = await agent_of(request).logs(toolbox_id, server, tail)
    return web.Response(text=text, content_type="text/plain")


async def get_operation(request: web.Request) -> web.Response:
    op_id = request.match_info["op"]
    record = await agent_of(request).repo.operation(op_id)
    if record is None:
        return error_response(404, "not_found", f"no operation {op_id}")
    return web.json_response(_operation_json(record))


def _operation_json(record: OperationRecord) -> dict[str, Any]:
    return OperationOut(
        id=record.id,
        kind=record.kind,
        toolbox=record.toolbox,
        state=record.state,
        revision=record.revision,
        error=record.error,
    ).model_dump(mode="json")


async def list_events(request: web.Request) -> web.StreamResponse:
    since = query_int(request, "since", 0, MAX_CURSOR, 0)
    toolbox = query_label(request, "toolbox")
    last_id = request.headers.get("Last-Event-ID", "").strip()
    if last_id and not matches(LAST_EVENT_ID_PATTERN, last_id):
        raise SpecInvalid(
            "invalid Last-Event-ID",
            [{"loc": ["header", "Last-Event-ID"], "msg": "must be an event cursor"}],
        )
    if "text/event-stream" in request.headers.get("Accept", ""):
        if last_id:
            since = int(last_id)
        return await stream_events(request, agent_of(request), since, toolbox)
    limit = query_int(request, "limit", 1, 1000, 500)
    events = await agent_of(request).repo.events(since, toolbox, limit)
    items = [asdict(e) for e in events]
    return web.json_response({"items": items, "next": items[-1]["cursor"] if items else since})
