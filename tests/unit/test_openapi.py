"""The OpenAPI document and the app's router list the same routes, both ways."""

from __future__ import annotations

import re
from typing import Any

from dtma.api.openapi import ROUTES, build_document
from dtma.domain.errors_journal import CATEGORIES
from dtma.spec.models import DNS_LABEL
from tests.unserved_app import unserved_app


def _app_routes() -> set[tuple[str, str]]:
    app = unserved_app()
    out = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        out.add((route.method, str(path)))
    return out


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    documented = {(r.method, r.path) for r in ROUTES}
    served = _app_routes()
    assert served - documented == set(), "routes missing from the OpenAPI document"
    assert documented - served == set(), "documented routes the app does not serve"


def test_the_document_is_openapi_3_1_with_resolvable_refs() -> None:
    doc = build_document()
    assert doc["openapi"] == "3.1.0"
    schemas = doc["components"]["schemas"]

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref
    put = doc["paths"]["/v1/toolboxes/{id}"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ToolboxSpec"
    )
    assert doc["paths"]["/v1/health"]["get"]["security"] == []
    assert "401" in doc["paths"]["/v1/events"]["get"]["responses"]
    interval = schemas["Health"]["properties"]["interval"]
    assert [alt["type"] for alt in interval["anyOf"]] == ["number", "string"]


def _patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return own + [p for v in node.values() for p in _patterns(v)]
    if isinstance(node, list):
        return [p for v in node for p in _patterns(v)]
    return []


def test_patterns_are_anchored_and_ecma_compatible() -> None:
    """JSON Schema patterns are ECMA regexes: no Python-only syntax such as \\Z or (?P<...>)."""
    patterns = _patterns(build_document())
    assert len(patterns) >= 10
    for pattern in patterns:
        assert pattern.startswith("^"), pattern
        assert pattern.endswith("$"), pattern
        assert not re.search(r"\\[AZz]|\(\?P|\(\?<[=!]", pattern), pattern
        re.compile(pattern)


def test_every_status_a_route_can_return_is_documented() -> None:
    doc = build_document()
    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        codes = set(op["responses"])
        if route.auth:
            assert "401" in codes, route.path
        if route.agent:
            assert "503" in codes, route.path
        if route.path.startswith("/v1/toolboxes/{id}"):
            assert {"404", "422"} <= codes, (route.method, route.path)
        if route.method in ("PUT", "POST"):
            assert {"413", "422"} <= codes, (route.method, route.path)
        if route.query:
            assert "422" in codes, route.path
        for code, response in op["responses"].items():
            if code.startswith("4") or code.startswith("5"):
                schema = response["content"]["application/json"]["schema"]
                assert schema["$ref"].endswith("/ErrorOut"), (route.path, code)


def test_parameters_carry_the_constraints_the_handlers_enforce() -> None:
    doc = build_document()

    def param(path: str, method: str, name: str) -> dict[str, Any]:
        params = doc["paths"][path][method]["parameters"]
        return dict(next(p["schema"] for p in params if p["name"] == name))

    toolbox_id = param("/v1/toolboxes/{id}", "put", "id")
    assert toolbox_id["pattern"] == DNS_LABEL
    assert toolbox_id["maxLength"] == 63
    assert param("/v1/toolboxes/{id}/servers/{name}/logs", "get", "name")["pattern"] == DNS_LABEL
    assert param("/v1/errors", "get", "category")["enum"] == list(CATEGORIES)
    assert param("/v1/errors", "get", "toolbox")["pattern"] == DNS_LABEL
    assert param("/v1/toolboxes/{id}/servers/{name}/logs", "get", "tail") == {
        "type": "integer",
        "minimum": 1,
        "maximum": 10000,
        "default": 100,
    }
    assert param("/v1/events", "get", "since")["maximum"] == 2**62
    assert param("/v1/toolboxes/{id}", "put", "wait")["maximum"] == 3600
    assert "pattern" in param("/v1/toolboxes/{id}/restart", "post", "Idempotency-Key")
    servers = doc["components"]["schemas"]["ServersIn"]["properties"]["servers"]
    assert servers["anyOf"][0]["items"]["pattern"] == DNS_LABEL
    body = doc["paths"]["/v1/toolboxes/{id}/rollback"]["post"]["requestBody"]["content"]
    assert list(body) == ["application/json"]
