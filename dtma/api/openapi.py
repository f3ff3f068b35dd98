"""The OpenAPI 3.1 document, generated from the pydantic models in api/schemas.py and the spec
models. ROUTES is the one list of routes; a test checks it against the app's router both ways."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel

from dtma import __version__
from dtma.api import schemas as s
from dtma.spec.models import ToolboxSpec

REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    responses: dict[int, type[BaseModel] | str]
    body: type[BaseModel] | None = None
    auth: bool = True
    query: tuple[tuple[str, str, str], ...] = ()  # (name, json type, description)
    headers: tuple[tuple[str, str], ...] = ()
    tags: tuple[str, ...] = field(default=("toolboxes",))


OP: dict[int, type[BaseModel] | str] = {202: s.OperationRefOut}
ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/health", "Liveness", {200: s.HealthOut}, auth=False, tags=("agent",)),
    Route(
        "GET",
        "/v1/ready",
        "Readiness: Docker reachable and state recovered",
        {200: s.ReadyOut, 503: s.ErrorOut},
        auth=False,
        tags=("agent",),
    ),
    Route(
        "GET",
        "/metrics",
        "Prometheus metrics (no token unless DTMA_METRICS_AUTH=true)",
        {200: "text"},
        auth=False,
        tags=("agent",),
    ),
    Route(
        "GET",
        "/v1/agent",
        "Agent version, host, Docker version and counts",
        {200: s.AgentOut},
        tags=("agent",),
    ),
    Route("GET", "/v1/openapi.json", "This document", {200: "object"}, tags=("agent",)),
    Route("GET", "/v1/toolboxes", "Every toolbox's status", {200: s.ToolboxListOut}),
    Route(
        "PUT",
        "/v1/toolboxes/{id}",
        "Apply a spec (JSON or YAML)",
        {200: s.ToolboxStatusOut, 202: s.ApplyAcceptedOut, 412: s.ErrorOut, 422: s.ErrorOut},
        body=ToolboxSpec,
        query=(("wait", "number", "seconds to wait for the rollout to end"),),
        headers=(("If-Match", "the newest revision number expected"),),
    ),
    Route(
        "GET",
        "/v1/toolboxes/{id}",
        "A toolbox's status",
        {200: s.ToolboxStatusOut, 404: s.ErrorOut},
    ),
    Route(
        "DELETE",
        "/v1/toolboxes/{id}",
        "Remove containers, network and secret files",
        {**OP, 200: s.DeleteDoneOut, 404: s.ErrorOut},
        query=(("wait", "number", "seconds to wait for the delete to end"),),
    ),
    Route(
        "POST",
        "/v1/toolboxes/{id}/rollback",
        "Roll back (default: previous stable revision)",
        {**OP, 404: s.ErrorOut, 409: s.ErrorOut},
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
    Route(
        "GET",
        "/v1/toolboxes/{id}/servers/{name}/logs",
        "A server's container log tail",
        {200: "text"},
        query=(("tail", "integer", "lines, 1-10000, default 100"),),
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
            ("toolbox", "string", "only this toolbox"),
            ("category", "string", "network|resource|config|dependency|auth|image|runtime"),
            ("resolved", "boolean", "true: resolved only; false: open only"),
            ("limit", "integer", "1-1000, default 200"),
        ),
        tags=("errors",),
    ),
    Route(
        "GET",
        "/v1/events",
        "The event journal; SSE with Accept: text/event-stream",
        {200: s.EventsPageOut},
        query=(
            ("since", "integer", "cursor to start after"),
            ("toolbox", "string", "only this toolbox's events"),
            ("limit", "integer", "page size, 1-1000"),
        ),
        headers=(("Last-Event-ID", "SSE: resume after this cursor"),),
        tags=("events",),
    ),
)


def build_document() -> dict[str, Any]:
    models: set[type[BaseModel]] = {s.ErrorOut}
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        if route.method == "POST":
            route = replace(
                route,
                headers=(
                    *route.headers,
                    ("Idempotency-Key", "a repeated request with this key gets the first response"),
                ),
            )
        op: dict[str, Any] = {
            "summary": route.summary,
            "tags": list(route.tags),
            "operationId": _op_id(route),
            "responses": {},
        }
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_params(route.path)
        ]
        params += [
            {"name": n, "in": "query", "required": False, "schema": {"type": t}, "description": d}
            for n, t, d in route.query
        ]
        params += [
            {
                "name": n,
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": d,
            }
            for n, d in route.headers
        ]
        if params:
            op["parameters"] = params
        if route.body is not None:
            models.add(route.body)
            ref = {"$ref": REF.format(model=route.body.__name__)}
            op["requestBody"] = {
                "required": route.method == "PUT",
                "content": {
                    "application/json": {"schema": ref},
                    "application/yaml": {"schema": ref},
                },
            }
        for status, out in route.responses.items():
            op["responses"][str(status)] = _response(out, models)
        if route.auth:
            op["responses"]["401"] = _response(s.ErrorOut, models)
        else:
            op["security"] = []
        if route.query:
            op["responses"].setdefault("422", _response(s.ErrorOut, models))
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


def _response(out: type[BaseModel] | str, models: set[type[BaseModel]]) -> dict[str, Any]:
    if out == "text":
        return {"description": "text", "content": {"text/plain": {"schema": {"type": "string"}}}}
    if out == "object":
        return {
            "description": "object",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    assert isinstance(out, type)
    models.add(out)
    return {
        "description": out.__name__,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=out.__name__)}}},
    }


def _path_params(path: str) -> list[str]:
    return [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]


def _op_id(route: Route) -> str:
    words = [w.strip("{}") for w in route.path.removeprefix("/v1/").split("/") if w]
    return route.method.lower() + "_" + "_".join(words).replace("-", "_").replace(".", "_")
