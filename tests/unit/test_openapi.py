"""The OpenAPI document and the app's router list the same routes, both ways."""

from __future__ import annotations

import random
from typing import Any

from dtma.api.app import create_app
from dtma.api.openapi import ROUTES, build_document
from dtma.engine.agent import Agent
from dtma.spec.validate import SpecPolicy
from tests.fakes import StaticReadiness


def _app_routes() -> set[tuple[str, str]]:
    unused: Any = None  # the router is built without touching the agent's collaborators
    agent = Agent(
        runtime=unused,
        repo=unused,
        journal=unused,
        probe_factory=unused,
        policy=SpecPolicy(),
        rng=random.Random(0),
    )
    app = create_app(token="t" * 32, readiness=StaticReadiness(), agent=agent)
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
