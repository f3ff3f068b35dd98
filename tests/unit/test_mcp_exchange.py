"""The endpoint's hot path (gateway/exchange.py) answers a plain 2026-07-28 tools/call exactly as
the SDK's own entry would, hands the handler the client's envelope, and leaves every other
request to the SDK: a header that disagrees with the body, a progress token, an `Mcp-Param-*`
header, another method, another era."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dtma.api.disconnects import app_runner
from dtma.api.mcp_endpoint import add_mcp_routes
from dtma.gateway import exchange as mcp_exchange
from tests.fakes_gateway import OneToolGateway

VERSION = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
}
PATH = "/v1/toolboxes/tb/mcp"


async def _served(gateway: OneToolGateway) -> AsyncIterator[tuple[TestClient, OneToolGateway]]:
    app = web.Application()
    add_mcp_routes(app, gateway, started=lambda: True)
    test_client = TestClient(TestServer(app))
    await test_client.start_server()
    yield test_client, gateway
    await test_client.close()


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient, OneToolGateway]]:
    async for served in _served(OneToolGateway()):
        yield served


def call(
    name: str = "time__now", arguments: Any = None, meta: Any = None, rid: Any = 7
) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "_meta": META if meta is None else meta}
    if arguments is not None:
        params["arguments"] = arguments
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}


def headers(name: str = "time__now", **extra: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": VERSION,
        "Mcp-Method": "tools/call",
        "Mcp-Name": name,
        **extra,
    }


async def post_both(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, body: Any, hdrs: dict[str, str]
) -> tuple[tuple[int, Any, bool], tuple[int, Any]]:
    """The same request on the hot path and on the SDK's (the hot path switched off); for the
    first, also whether the hot path answered it."""
    taken: list[bool] = []
    real_answer = mcp_exchange.answer

    async def spy(*args: Any, **kwargs: Any) -> web.Response | None:
        reply = await real_answer(*args, **kwargs)
        taken.append(reply is not None)
        return reply

    monkeypatch.setattr(mcp_exchange, "answer", spy)
    data = json.dumps(body)
    fast = await client.post(PATH, data=data, headers=hdrs)
    fast_body = json.loads(await fast.text() or "null")
    monkeypatch.setattr(mcp_exchange, "takes", lambda request: False)
    sdk = await client.post(PATH, data=data, headers=hdrs)
    sdk_body = json.loads(await sdk.text() or "null")
    return (fast.status, fast_body, any(taken)), (sdk.status, sdk_body)


async def test_a_plain_call_is_answered_on_the_hot_path_as_the_sdk_answers_it(
    client: tuple[TestClient, OneToolGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    test_client, _ = client
    (status, body, taken), sdk = await post_both(
        test_client, monkeypatch, call(arguments={"timezone": "UTC"}), headers()
    )
    assert taken
    assert (status, body) == sdk
    assert status == 200
    assert body["id"] == 7
    assert body["result"]["content"][0]["text"] == "{'timezone': 'UTC'}"


@pytest.mark.parametrize(
    ("body", "hdrs"),
    [
        # Mcp-Name disagrees with the body: the SDK's HEADER_MISMATCH
        (call(), headers(name="time__other")),
        # a routing header twice is refused by the SDK (the raw lines show it)
        (call(), {**headers(), "mcp-method": "tools/call"}),
        # a progress token: the SDK's SSE stream can carry progress
        (call(meta={**META, "progressToken": "p1"}), headers()),
        # an Mcp-Param header: the SDK checks it against the schema
        (call(arguments={"timezone": "UTC"}), headers(**{"Mcp-Param-Timezone": "UTC"})),
        # no envelope
        (call(meta={}), headers()),
        # a notification (no id): acknowledged by the SDK
        ({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "x"}}, headers()),
        # a batch
        ([call()], headers()),
        # an unsupported revision
        (call(), {**headers(), "MCP-Protocol-Version": "2099-01-01"}),
        # JSON only, which this (SSE-capable) endpoint does not serve
        (call(), {**headers(), "Accept": "application/json"}),
    ],
    ids=[
        "name-mismatch",
        "duplicate-header",
        "progress",
        "param-header",
        "no-envelope",
        "notification",
        "batch",
        "version",
        "accept",
    ],
)
async def test_every_other_request_is_left_to_the_sdk(
    client: tuple[TestClient, OneToolGateway],
    monkeypatch: pytest.MonkeyPatch,
    body: Any,
    hdrs: dict[str, str],
) -> None:
    test_client, _ = client
    if "mcp-method" in hdrs:  # the duplicate case: two header lines of one name
        hdrs = dict(hdrs)
        del hdrs["mcp-method"]
        from multidict import CIMultiDict

        doubled = CIMultiDict(hdrs)
        doubled.add("Mcp-Method", "tools/call")
        hdrs = doubled  # type: ignore[assignment]
    (status, answer_body, taken), sdk = await post_both(test_client, monkeypatch, body, hdrs)
    assert not taken
    assert (status, answer_body) == sdk


async def test_the_envelope_reaches_the_gateway_once_the_tool_schema_is_known(
    client: tuple[TestClient, OneToolGateway],
) -> None:
    test_client, gateway = client
    for _ in range(2):
        response = await test_client.post(PATH, data=json.dumps(call()), headers=headers())
        assert response.status == 200
    # the first call: no listing yet, so the endpoint lists the tools once before serving it
    # (a 2026-07-28 call's Mcp-Param-* headers are checked against the listed schema)
    assert gateway.envelopes == [META, META]
    assert gateway.listings == 1


async def test_an_unknown_tool_fails_as_the_sdk_fails_it(
    client: tuple[TestClient, OneToolGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    test_client, _ = client
    (status, body, taken), sdk = await post_both(
        test_client, monkeypatch, call(name="nope"), headers(name="nope")
    )
    assert taken
    assert (status, body) == sdk
    assert "error" in body


@contextlib.asynccontextmanager
async def agent_like_server(app: web.Application) -> AsyncIterator[str]:
    """The app served as the agent serves it (bootstrap.py, with api/disconnects.app_runner):
    aiohttp cancels a handler whose client has gone. Yields the endpoint's URL."""
    runner = app_runner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}{PATH}"
    finally:
        await runner.cleanup()


class BlockingGateway(OneToolGateway):
    """Its calls wait until cancelled; records that they were."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def call(
        self,
        toolbox_id: str,
        name: str,
        arguments: dict[str, Any] | None,
        envelope: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("unreachable")


async def test_a_client_that_goes_away_cancels_its_call_on_the_hot_path() -> None:
    gateway = BlockingGateway()
    app = web.Application()
    add_mcp_routes(app, gateway, started=lambda: True)
    async with agent_like_server(app) as url, aiohttp.ClientSession() as http:
        request = asyncio.create_task(http.post(url, data=json.dumps(call()), headers=headers()))
        await asyncio.wait_for(gateway.started.wait(), 5)
        request.cancel()  # the client closes its connection
        with contextlib.suppress(asyncio.CancelledError):
            await request
        await asyncio.wait_for(gateway.cancelled.wait(), 5)


MARKED_SCHEMA = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "x-mcp-header": "Timezone"}},
}


@pytest.fixture
async def marked() -> AsyncIterator[tuple[TestClient, OneToolGateway]]:
    """The endpoint with one tool whose `timezone` is mirrored into `Mcp-Param-Timezone`."""
    async for served in _served(OneToolGateway(MARKED_SCHEMA)):
        yield served


@pytest.mark.parametrize("param", [{"Mcp-Param-Timezone": "CET"}, {}], ids=["disagrees", "missing"])
async def test_a_fresh_endpoint_checks_the_first_calls_param_header(
    marked: tuple[TestClient, OneToolGateway], param: dict[str, str]
) -> None:
    """No listing yet: the endpoint lists before the call, and the SDK's check refuses it."""
    test_client, gateway = marked
    body = call(arguments={"timezone": "UTC"})
    response = await test_client.post(PATH, data=json.dumps(body), headers=headers(**param))
    answer = json.loads(await response.text())
    assert response.status == 400, answer
    assert answer["error"]["code"] == -32020, answer
    assert answer["error"]["message"].startswith("Mcp-Param-Timezone header "), answer
    assert gateway.envelopes == []  # no call reached the gateway
    assert gateway.listings == 1


async def test_a_call_to_a_marked_tool_is_never_relayed_as_is(
    marked: tuple[TestClient, OneToolGateway],
) -> None:
    """Its envelope is withheld, so the gateway calls through the SDK's session (which mirrors
    the header) rather than relaying the request's bytes (which would lose it): for a call with
    the header (the SDK's whole way) and for one without the marked argument, which needs no
    header and which the hot path takes."""
    test_client, gateway = marked
    sent = [
        (call(arguments={"timezone": "UTC"}), headers(**{"Mcp-Param-Timezone": "UTC"})),
        (call(arguments={}), headers()),
    ]
    for body, hdrs in sent:
        response = await test_client.post(PATH, data=json.dumps(body), headers=hdrs)
        assert response.status == 200, await response.text()
    assert gateway.envelopes == [None, None]


async def test_calls_naming_no_offered_tool_cost_no_listing(
    marked: tuple[TestClient, OneToolGateway],
) -> None:
    """Names that are not offered, or no `Mcp-Name` at all: refused as before, and never a
    listing of the servers' tools (a client must not be able to cause one per request)."""
    test_client, gateway = marked
    sent = [(call(name=f"nope__x{i}"), headers(name=f"nope__x{i}")) for i in range(5)]
    nameless = headers()
    del nameless["Mcp-Name"]
    sent += [(call(), nameless)] * 3
    for body, hdrs in sent:
        response = await test_client.post(PATH, data=json.dumps(body), headers=hdrs)
        assert response.status == 400, await response.text()
    assert gateway.listings == 0
    assert gateway.envelopes == []


async def test_concurrent_first_calls_share_one_listing(
    marked: tuple[TestClient, OneToolGateway],
) -> None:
    test_client, gateway = marked
    gateway.listing_delay = 0.3
    body = call(arguments={"timezone": "UTC"})
    hdrs = headers(**{"Mcp-Param-Timezone": "UTC"})
    responses = await asyncio.gather(
        *(test_client.post(PATH, data=json.dumps(body), headers=hdrs) for _ in range(6))
    )
    assert [r.status for r in responses] == [200] * 6
    assert gateway.listings == 1
