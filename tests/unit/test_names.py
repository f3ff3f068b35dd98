"""Every name is anchored at both ends: a trailing newline (Python's `$` matches before one)
and the other near misses are refused, in the spec and in the API's path, query and header
parameters."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from dtma.api.app import create_app
from dtma.engine.agent import Agent
from dtma.engine.engine_watch import EngineWatch
from dtma.engine.journal import Journal
from dtma.engine.supervisor import Supervisor
from dtma.errors import SpecInvalid
from dtma.spec.models import is_dns_label
from dtma.spec.units import parse_duration, parse_size
from dtma.spec.validate import SpecPolicy, parse_spec, validate_toolbox_id
from tests.fakes import FakeEnginePing, StaticReadiness

TOKEN = "t" * 32
NEAR_MISSES = ["\n", "\r", "\t", "\x00"]  # as suffixes; a leading newline too


def spec_with(**server: Any) -> dict[str, Any]:
    return {"servers": [{"name": "a", "image": "img:1", **server}]}


def secret(**vault: str) -> list[dict[str, Any]]:
    return [{"name": "T", "vault": {"mount": "secret", "path": "p", "key": "k", **vault}}]


# (what, a valid spec built from a value, the valid value)
SPEC_NAMES: list[tuple[str, Callable[[str], dict[str, Any]], str]] = [
    ("server name", lambda v: spec_with(name=v), "time"),
    ("image", lambda v: spec_with(image=v), "dtma-examples/mcp-time:1"),
    ("env name", lambda v: spec_with(env={v: "x"}), "TZ"),
    ("secret name", lambda v: spec_with(secrets=[{**secret()[0], "name": v}]), "TOKEN"),
    ("vault mount", lambda v: spec_with(secrets=secret(mount=v)), "secret"),
    ("vault path", lambda v: spec_with(secrets=secret(path=v)), "team/github"),
    (
        "http path",
        lambda v: spec_with(transport="streamable-http", port=8000, path=v),
        "/mcp",
    ),
    ("mount target", lambda v: spec_with(mounts=[{"type": "tmpfs", "target": v}]), "/data"),
    (
        "volume name",
        lambda v: spec_with(mounts=[{"type": "volume", "source": v, "target": "/d"}]),
        "notes-data",
    ),
    (
        "publish",
        lambda v: {
            **spec_with(transport="streamable-http", port=8000, publish=v),
            "rollout": {"order": "stop_first"},
            "network": {"egress": True},
        },
        "127.0.0.1:8080",
    ),
]
POLICY = SpecPolicy(vault_configured=True, allow_volumes=("*",))


@pytest.mark.parametrize(("what", "build", "good"), SPEC_NAMES, ids=[n[0] for n in SPEC_NAMES])
def test_every_spec_name_refuses_a_trailing_newline_and_near_misses(
    what: str, build: Callable[[str], dict[str, Any]], good: str
) -> None:
    parse_spec(json.dumps(build(good)), POLICY)  # the valid value passes
    accepted = []
    for bad in [good + c for c in NEAR_MISSES] + ["\n" + good]:
        try:
            parse_spec(json.dumps(build(bad)), POLICY)
            accepted.append(bad)
        except SpecInvalid:
            pass
    assert accepted == [], f"{what}: accepted {accepted!r}"


@pytest.mark.parametrize(
    "bad", ["a\n", "\na", "a\r\n", "", "A", "-a", "a-", "a" * 64, "a.b", "a_b", "é", "a\x00"]
)
def test_dns_labels_and_toolbox_ids(bad: str) -> None:
    assert not is_dns_label(bad)
    with pytest.raises(SpecInvalid):
        validate_toolbox_id(bad)
    assert all(is_dns_label(good) for good in ("a", "a-1", "0", "a" * 63))


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    """The real app and router, with an Agent that was never started: a handler that checks
    its parameters first answers 422 before it would answer 503."""
    unused: Any = None
    agent = Agent(
        runtime=unused,
        repo=unused,
        journal=Journal(store=unused),
        probe_factory=unused,
        policy=SpecPolicy(),
        engine=EngineWatch(FakeEnginePing()),
        supervisor=Supervisor(),
        rng=random.Random(0),
    )
    app = create_app(token=TOKEN, readiness=StaticReadiness(), agent=agent)
    c: TestClient[Any, Any] = TestClient(TestServer(app))
    await c.start_server()
    yield c
    await c.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC = json.dumps(spec_with()).encode()


@pytest.mark.parametrize(
    ("method", "path", "where"),
    [
        ("PUT", "/v1/toolboxes/x%0A", ["path", "id"]),
        ("GET", "/v1/toolboxes/x%0A", ["path", "id"]),
        ("DELETE", "/v1/toolboxes/x%0A", ["path", "id"]),
        ("POST", "/v1/toolboxes/x%0A/restart", ["path", "id"]),
        ("GET", "/v1/toolboxes/X/tools", ["path", "id"]),
        ("GET", "/v1/toolboxes/x/servers/y%0A/logs", ["path", "name"]),
        ("GET", "/v1/events?toolbox=x%0A", ["query", "toolbox"]),
        ("GET", "/v1/errors?toolbox=x%0A", ["query", "toolbox"]),
        ("GET", "/v1/errors?category=nope", ["query", "category"]),
        ("GET", "/v1/events?since=4611686018427387905", ["query", "since"]),
        ("GET", "/v1/toolboxes/x/servers/y/logs?tail=0", ["query", "tail"]),
    ],
)
async def test_bad_parameters_get_422_with_the_error_shape(
    client: TestClient[Any, Any], method: str, path: str, where: list[str]
) -> None:
    resp = await client.request(method, path, headers=AUTH, data=SPEC)
    assert resp.status == 422, await resp.text()
    body = await resp.json()
    assert body["error"]["code"] == "invalid_spec"
    assert body["error"]["details"][0]["loc"] == where


async def test_bad_headers_and_bodies_get_422(client: TestClient[Any, Any]) -> None:
    for headers, path, data in [
        ({"If-Match": "1x"}, "/v1/toolboxes/x", SPEC),
        ({"Idempotency-Key": "k" * 256}, "/v1/toolboxes/x/restart", b""),
        ({}, "/v1/toolboxes/x/restart", b'{"servers": ["a\\n"]}'),
        ({}, "/v1/toolboxes/x/restart", b'{"servers": "a"}'),
        ({}, "/v1/toolboxes/x/rollback", b'{"revision": "3"}'),
        ({}, "/v1/toolboxes/x/rollback", b'{"revision": 1, "extra": 1}'),
        ({}, "/v1/toolboxes/x/rollback", b"[" * 100000),
    ]:
        method = "PUT" if "If-Match" in headers else "POST"
        resp = await client.request(method, path, headers={**AUTH, **headers}, data=data)
        assert resp.status == 422, (headers, path, data[:40], await resp.text())


async def test_a_wrong_method_gets_405_with_allow(client: TestClient[Any, Any]) -> None:
    resp = await client.request("PATCH", "/v1/toolboxes/x", headers=AUTH)
    assert resp.status == 405
    assert set(resp.headers["Allow"].split(",")) >= {"GET", "PUT", "DELETE"}
    assert (await resp.json())["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("bad", ["5s\n", " 5s", "5 s", "5s ", "\u0665s", "5S", ""])
def test_durations_match_the_documented_pattern_only(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", ["64m\n", " 64m", "64 m", "\u0665m", "64mbb", ""])
def test_sizes_match_the_documented_pattern_only(bad: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)
