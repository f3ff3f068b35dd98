"""The API app in-process with fake capabilities: auth, readiness, request ids, error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from dtma.api.app import create_app
from tests.fakes import StaticReadiness

TOKEN = "t" * 32


@pytest.fixture
async def client_for() -> AsyncIterator[object]:
    clients: list[TestClient] = []

    async def make(reasons: list[str] | None = None) -> TestClient:
        c = TestClient(TestServer(create_app(token=TOKEN, readiness=StaticReadiness(reasons))))
        await c.start_server()
        clients.append(c)
        return c

    yield make
    for c in clients:
        await c.close()


async def test_ready_lists_the_reasons(client_for) -> None:  # type: ignore[no-untyped-def]
    c = await client_for(["docker: unreachable at /x.sock", "state: not loaded"])
    resp = await c.get("/v1/ready")
    assert resp.status == 503
    body = await resp.json()
    assert body["error"]["code"] == "not_ready"
    assert body["error"]["details"] == [
        {"loc": ["docker"], "msg": "unreachable at /x.sock"},
        {"loc": ["state"], "msg": "not loaded"},
    ]


async def test_bearer_is_case_insensitive_and_wrong_tokens_fail(client_for) -> None:  # type: ignore[no-untyped-def]
    c = await client_for()
    assert (await c.get("/v1/x", headers={"Authorization": f"bearer {TOKEN}"})).status == 404
    assert (await c.get("/v1/x", headers={"Authorization": f"Basic {TOKEN}"})).status == 401
    assert (await c.get("/v1/x", headers={"Authorization": "Bearer"})).status == 401
    assert (await c.get("/v1/x", headers={"Authorization": f"Bearer {TOKEN}x"})).status == 401


async def test_not_found_and_wrong_method_use_the_error_shape(client_for) -> None:  # type: ignore[no-untyped-def]
    c = await client_for()
    resp = await c.post("/v1/health")
    assert resp.status == 405
    body = await resp.json()
    assert body["error"]["code"] == "method_not_allowed"
    assert body["error"]["details"] == []


async def test_unsafe_request_ids_are_replaced(client_for) -> None:  # type: ignore[no-untyped-def]
    c = await client_for()
    resp = await c.get("/v1/health", headers={"X-Request-Id": "bad id\twith spaces"})
    assert resp.headers["X-Request-Id"] != "bad id\twith spaces"
    assert len(resp.headers["X-Request-Id"]) == 16


async def test_made_request_ids_are_unique_hex(client_for) -> None:  # type: ignore[no-untyped-def]
    c = await client_for()
    ids = [(await c.get("/v1/health")).headers["X-Request-Id"] for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
