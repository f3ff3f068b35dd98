"""The OpenAPI 3.1 document, generated from the pydantic models in api/schemas.py and the spec
models. ROUTES is the one list of routes; a test checks it against the app's router both ways."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel

from dtma import __version__
from dtma.api import schemas as s
from dtma.api import schemas_heartbeat as hb
from dtma.api.params import (
    IDEMPOTENCY_KEY_PATTERN,
    IF_MATCH_PATTERN,
    LAST_EVENT_ID_PATTERN,
    MAX_CURSOR,
    MAX_KEY,
    MAX_LOG_TAIL,
    MAX_WAIT_S,
    OPERATION_ID,
)
from dtma.domain.access import TOKEN_ID_PATTERN
from dtma.domain.errors_journal import CATEGORIES
from dtma.spec.models import DNS_LABEL_SCHEMA, ToolboxSpec

REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Param:
    """A query or header parameter: its JSON Schema is exactly what the handler accepts."""

    name: str
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    responses: dict[int, type[BaseModel] | str]
    body: type[BaseModel] | None = None
    auth: bool = True
    agent: bool = True  # served through the Agent: 503 while it is still starting
    query: tuple[Param, ...] = ()
    headers: tuple[Param, ...] = ()
    tags: tuple[str, ...] = field(default=("toolboxes",))
    idempotency_key: bool = True  # a POST that honours Idempotency-Key
    callbacks: bool = False  # the agent's heartbeats to its controller (docs/controller.md)


def _int(lo: int, hi: int, default: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": lo, "maximum": hi}
    return schema if default is None else {**schema, "default": default}


# The path parameters' schemas; the handlers refuse anything else with 422 (404 for {op}).
PATH_PARAMS: dict[str, dict[str, Any]] = {
    "id": {**DNS_LABEL_SCHEMA, "description": "toolbox id (a DNS label)"},
    "name": {**DNS_LABEL_SCHEMA, "description": "server name (a DNS label)"},
    "op": {"type": "string", "pattern": OPERATION_ID, "description": "operation id"},
    "token_id": {"type": "string", "pattern": TOKEN_ID_PATTERN, "description": "client token id"},
}
TOOLBOX_FILTER = Param("toolbox", DNS_LABEL_SCHEMA, "only this toolbox")
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN, "maxLength": MAX_KEY},
    "a repeated request with this key gets the first successful response",
)
# Why each status is returned; the same words for every route.
STATUS_TEXT = {
    200: "OK",
    201: "created",
    202: "accepted: an operation was started",
    204: "done; no content",
    401: "missing or wrong bearer token",
    403: "a client token used anywhere but its own toolbox's MCP endpoint",
    404: "no such toolbox, server, revision or operation",
    409: "a conflict: no stable revision to roll back to, or a toolbox's token limit reached",
    412: "If-Match does not name the newest revision",
    413: "the body is larger than DTMA_MAX_BODY",
    422: "invalid input (path, query, header or body); details name each problem",
    503: "the agent is still starting, or Docker is unreachable",
}
OP: dict[int, type[BaseModel] | str] = {202: s.OperationRefOut, 404: s.ErrorOut}
ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/v1/health",
        "Liveness",
        {200: s.HealthOut},
        auth=False,
        agent=False,
        tags=("agent",),
    ),
    Route(
        "GET",
        "/v1/ready",
        "Readiness: Docker reachable and state recovered",
        {200: s.ReadyOut, 503: s.ErrorOut},
        auth=False,
        agent=False,
        tags=("agent",),
    ),
    Route(
        "GET",
        "/metrics",
        "Prometheus metrics (401 without the token only when DTMA_METRICS_AUTH=true)",
        {200: "text", 401: s.ErrorOut},
        auth=False,
        agent=False,
        tags=("agent",),
    ),
    Route(
        "GET",
        "/v1/agent",
        "Agent version, host, Docker version, counts and the controller's heartbeat status",
        {200: s.AgentOut},
        tags=("agent",),
        callbacks=True,
    ),
    Route(
        "POST",
        "/v1/agent/adopt",
        "Release the orphans held at start (an empty state dir) to the reaper (idempotent)",
        {200: s.AdoptOut},
        tags=("agent",),
        idempotency_key=False,
    ),
    Route(
        "GET", "/v1/openapi.json", "This document", {200: "object"}, agent=False, tags=("agent",)
    ),
    Route("GET", "/v1/toolboxes", "Every toolbox's status", {200: s.ToolboxListOut}),
    Route(
        "PUT",
        "/v1/toolboxes/{id}",
        "Apply a spec (JSON or YAML). 422 also covers rules a JSON Schema cannot state: "
        "cross-field rules, unique names, and the agent's policy (secrets need Vault, ...)",
        {200: s.ToolboxStatusOut, 202: s.ApplyAcceptedOut, 409: s.ErrorOut, 412: s.ErrorOut},
        body=ToolboxSpec,
        query=(
            Param(
                "wait",
                {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
                "seconds to wait for the rollout to end",
            ),
        ),
        headers=(
            Param(
                "If-Match",
                {"type": "string", "pattern": IF_MATCH_PATTERN},
                "the newest revision number expected",
            ),
        ),
    ),
    Route("GET", "/v1/toolboxes/{id}", "A toolbox's status", {200: s.ToolboxStatusOut}),
    Route(
        "DELETE",
        "/v1/toolboxes/{id}",
        "Remove containers, network and secret files; ?wait=S waits like PUT does",
        {**OP, 200: s.DeleteDoneOut},
        query=(
            Param(
                "wait",
                {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
                "seconds to wait for the delete to end",
            ),
        ),
    ),
    Route(
        "POST",
        "/v1/toolboxes/{id}/rollback",
        "Roll back (default: previous stable revision)",
        {**OP, 409: s.ErrorOut},
        body=s.RollbackIn,
    ),
    Route("POST", "/v1/toolboxes/{id}/restart", "Restart servers", OP, body=s.ServersIn),
    Route("POST", "/v1/toolboxes/{id}/stop", "Stop servers", OP, body=s.ServersIn),
    Route("POST", "/v1/toolboxes/{id}/start", "Start servers", OP, body=s.ServersIn),
    Route(
        "POST",
        "/v1/toolboxes/{id}/secrets/refresh",
        "Re-read secrets; replace the servers whose values changed",
        OP,
    ),
    Route("GET", "/v1/toolboxes/{id}/revisions", "Revisions", {200: s.RevisionsOut}),
    Route("GET", "/v1/toolboxes/{id}/tools", "Discovered MCP tools by server", {200: s.ToolsOut}),
    # MCP over streamable HTTP (docs/gateway.md): JSON-RPC bodies and SSE streams whose shapes
    # the MCP specification defines, not this document; schemathesis skips these three.
    *(
        Route(
            method,
            "/v1/toolboxes/{id}/mcp",
            f"The toolbox's MCP endpoint (streamable HTTP): {what}",
            {200: "mcp"},
            tags=("mcp",),
            idempotency_key=False,
        )
        for method, what in (
            ("POST", "a JSON-RPC message"),
            ("GET", "the session's server-to-client stream"),
            ("DELETE", "end the session"),
        )
    ),
    Route(
        "GET",
        "/.well-known/oauth-protected-resource/v1/toolboxes/{id}/mcp",
        "OAuth protected-resource metadata (RFC 9728) of the toolbox's MCP endpoint; 404 when "
        "no OAuth issuer is configured",
        {200: s.ProtectedResourceOut, 404: s.ErrorOut},
        auth=False,
        agent=False,
        tags=("mcp",),
    ),
    Route(
        "POST",
        "/v1/toolboxes/{id}/tokens",
        "Issue a client token for this toolbox's MCP endpoint; its value is in this answer only",
        {201: s.TokenCreatedOut, 404: s.ErrorOut, 409: s.ErrorOut},
        body=s.TokenIn,
        tags=("access",),
        idempotency_key=False,  # the answer holds the token: it is never stored for replay
    ),
    Route(
        "GET",
        "/v1/toolboxes/{id}/tokens",
        "The toolbox's client tokens (never their values)",
        {200: s.TokensOut},
        tags=("access",),
    ),
    Route(
        "DELETE",
        "/v1/toolboxes/{id}/tokens/{token_id}",
        "Revoke a client token: its next request is refused",
        {204: "empty"},
        tags=("access",),
    ),
    Route(
        "GET",
        "/v1/toolboxes/{id}/calls",
        "The toolbox's tool-call journal (outcomes and sizes, never arguments or results)",
        {200: s.CallsPageOut},
        query=(
            Param("since", _int(0, MAX_CURSOR, 0), "cursor to start after"),
            Param("limit", _int(1, 1000, 500), "page size"),
        ),
        tags=("access",),
    ),
    Route(
        "GET",
        "/v1/toolboxes/{id}/servers/{name}/logs",
        "A server's container log tail",
        {200: "text"},
        query=(Param("tail", _int(1, MAX_LOG_TAIL, 100), "lines"),),
    ),
    Route(
        "GET",
        "/v1/operations/{op}",
        "An operation",
        {200: s.OperationOut, 404: s.ErrorOut},
        tags=("operations",),
    ),
    Route(
        "GET",
        "/v1/errors",
        "The error journal: deduplicated, categorized",
        {200: s.ErrorsOut},
        query=(
            TOOLBOX_FILTER,
            Param("category", {"type": "string", "enum": list(CATEGORIES)}, "only this category"),
            Param("resolved", {"type": "boolean"}, "true: resolved only; false: open only"),
            Param("limit", _int(1, 1000, 200), "page size"),
        ),
        tags=("errors",),
    ),
    Route(
        "GET",
        "/v1/events",
        "The event journal; SSE with Accept: text/event-stream (429 beyond the stream limit)",
        {200: s.EventsPageOut, 429: s.ErrorOut},
        query=(
            Param("since", _int(0, MAX_CURSOR, 0), "cursor to start after"),
            TOOLBOX_FILTER,
            Param("limit", _int(1, 1000, 500), "page size"),
        ),
        headers=(
            Param(
                "Last-Event-ID",
                {"type": "string", "pattern": LAST_EVENT_ID_PATTERN},
                "SSE: resume after this cursor",
            ),
        ),
        tags=("events",),
    ),
)


def responses_of(route: Route) -> dict[int, type[BaseModel] | str]:
    """Every status the route can answer: its own, plus those its shape implies."""
    out = dict(route.responses)
    if route.auth:
        out[401] = s.ErrorOut
        out[403] = s.ErrorOut
    if route.agent:
        out[503] = s.ErrorOut
    if _path_params(route.path):
        out.setdefault(404, s.ErrorOut)
        if route.path.startswith("/v1/toolboxes/"):
            out[422] = s.ErrorOut
    if route.query or route.headers or route.body is not None or route.method == "POST":
        out[422] = s.ErrorOut
    if route.method in ("PUT", "POST"):
        out[413] = s.ErrorOut  # POST bodies are read for Idempotency-Key even without a model
    return dict(sorted(out.items()))


def build_document() -> dict[str, Any]:
    models: set[type[BaseModel]] = {s.ErrorOut}
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        if route.method == "POST" and route.idempotency_key:
            route = replace(route, headers=(*route.headers, IDEMPOTENCY_KEY))
        op: dict[str, Any] = {
            "summary": route.summary,
            "tags": list(route.tags),
            "operationId": _op_id(route),
            "responses": {},
        }
        params = [
            {"name": name, "in": "path", "required": True, "schema": PATH_PARAMS[name]}
            for name in _path_params(route.path)
        ]
        params += [_param(p, "query") for p in route.query]
        params += [_param(p, "header") for p in route.headers]
        if params:
            op["parameters"] = params
        if route.body is not None:
            models.add(route.body)
            ref = {"$ref": REF.format(model=route.body.__name__)}
            # A spec may be YAML; the small POST bodies are JSON only.
            types = ("application/json", "application/yaml") if route.method == "PUT" else ()
            op["requestBody"] = {
                "required": route.method == "PUT",
                "content": {t: {"schema": ref} for t in types or ("application/json",)},
            }
        for status, out in responses_of(route).items():
            op["responses"][str(status)] = _response(status, out, models)
        if not route.auth:
            op["security"] = []
        if route.callbacks:
            op["callbacks"] = heartbeat_callback(models)
        paths.setdefault(route.path, {})[route.method.lower()] = op
    schemas: dict[str, Any] = {}
    for model in sorted(models, key=lambda m: m.__name__):
        schema = model.model_json_schema(ref_template=REF, by_alias=True)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dtma control API",
            "version": __version__,
            "description": "Per-host agent for health-gated MCP toolboxes on Docker.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


# Where the agent sends heartbeats, as runtime expressions over GET /v1/agent's answer.
HEARTBEAT_URL = "{$response.body#/controller/url}/v1/agents/{$response.body#/agent_id}/heartbeat"


def heartbeat_callback(models: set[type[BaseModel]]) -> dict[str, Any]:
    """The heartbeat the agent POSTs to DTMA_CONTROLLER_URL, as an OpenAPI callback."""
    models.update((hb.HeartbeatIn, hb.HeartbeatAnswer))

    def json_of(model: type[BaseModel]) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}

    post = {
        "summary": "Heartbeat to the controller (sent by the agent; docs/controller.md)",
        "operationId": "heartbeat",
        "security": [{"bearer": []}],
        "requestBody": {"required": True, "content": json_of(hb.HeartbeatIn)},
        "responses": {
            "2XX": {
                "description": "acknowledged; an empty body or a JSON object, "
                '`{"resync": true}` asks for a full heartbeat next',
                "content": json_of(hb.HeartbeatAnswer),
            },
            "default": {
                "description": "not acknowledged: 5xx and no answer are retried with backoff "
                "within the interval; 401/403, other 4xx, redirects (never followed) and "
                "bodies that are not a JSON object wait for the next interval"
            },
        },
    }
    return {"heartbeat": {HEARTBEAT_URL: {"post": post}}}


def _param(param: Param, where: str) -> dict[str, Any]:
    return {
        "name": param.name,
        "in": where,
        "required": False,
        "schema": param.schema,
        "description": param.description,
    }


def _response(
    status: int, out: type[BaseModel] | str, models: set[type[BaseModel]]
) -> dict[str, Any]:
    text = STATUS_TEXT.get(status, out if isinstance(out, str) else out.__name__)
    if out == "empty":
        return {"description": text}
    if out == "text":
        return {"description": text, "content": {"text/plain": {"schema": {"type": "string"}}}}
    if out == "mcp":
        body = {"schema": {"type": "object", "description": "a JSON-RPC message (MCP)"}}
        stream = {"schema": {"type": "string", "description": "MCP messages as SSE events"}}
        return {
            "description": "an MCP answer (see the MCP specification)",
            "content": {"application/json": body, "text/event-stream": stream},
        }
    if out == "object":
        return {
            "description": text,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    assert isinstance(out, type)
    models.add(out)
    return {
        "description": text,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=out.__name__)}}},
    }


def _path_params(path: str) -> list[str]:
    return [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]


def _op_id(route: Route) -> str:
    words = [w.strip("{}") for w in route.path.removeprefix("/v1/").split("/") if w]
    return route.method.lower() + "_" + "_".join(words).replace("-", "_").replace(".", "_")
