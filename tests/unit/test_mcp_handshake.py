"""A handshake-era session's requests take the hot path (gateway/handshake.py) once the session is
open, and are answered as the SDK's own transport answers them (there: on an SSE stream; here:
one JSON body); everything else is left to the SDK. Also: a 2026-07-28 `tools/list` takes the
hot path too. (sdk_compat/server.py's own checks: tests/unit/test_sdk_compat.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dtma.api.mcp_endpoint import MCP_ENDPOINTS, add_mcp_routes
from dtma.gateway import exchange as mcp_exchange
from dtma.gateway import handshake as mcp_handshake
from dtma.sdk_compat import server as sdk_server
from tests.fakes_gateway import OneToolGateway
from tests.unit.test_mcp_exchange import META, PATH, BlockingGateway, headers

VERSION = "2025-11-25"
ACCEPT = "application/json, text/event-stream"


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    app = web.Application()
    add_mcp_routes(app, OneToolGateway(), started=lambda: True)
    test_client = TestClient(TestServer(app))
    await test_client.start_server()
    yield test_client
    await test_client.close()


def rpc(method: str, rid: Any = 1, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if rid is not None:
        body["id"] = rid
    return body


def session_headers(session: str | None, **extra: str) -> dict[str, str]:
    hdrs = {"Content-Type": "application/json", "Accept": ACCEPT, **extra}
    if session is not None:
        hdrs["Mcp-Session-Id"] = session
        hdrs.setdefault("MCP-Protocol-Version", VERSION)
    return hdrs


def message_of(text: str) -> Any:
    """The JSON-RPC message of a reply: a JSON body, or the data of an SSE stream's one message."""
    if not text.startswith(("event:", "data:", "id:", ":")):
        return json.loads(text or "null")
    data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    messages = [json.loads(d) for d in data if d]
    assert len(messages) == 1, text
    return messages[0]


def spy_on(monkeypatch: pytest.MonkeyPatch, path: Any) -> list[bool]:
    """Wrap a hot path module's `answer`; the list says, per request it saw, whether it
    answered (the handshake path returns (body, reply), the 2026-07-28 one the reply)."""
    taken: list[bool] = []
    real_answer = path.answer

    async def spy(*args: Any, **kwargs: Any) -> Any:
        answered = await real_answer(*args, **kwargs)
        reply = answered[1] if isinstance(answered, tuple) else answered
        taken.append(reply is not None)
        return answered

    monkeypatch.setattr(path, "answer", spy)
    return taken


async def open_session(client: TestClient, initialized: bool = True) -> str:
    capabilities: dict[str, Any] = {}
    init = rpc(
        "initialize",
        protocolVersion=VERSION,
        capabilities=capabilities,
        clientInfo={"name": "t", "version": "1"},
    )
    response = await client.post(PATH, data=json.dumps(init), headers=session_headers(None))
    assert response.status == 200, await response.text()
    session = response.headers["Mcp-Session-Id"]
    await response.read()
    if initialized:
        note = rpc("notifications/initialized", rid=None)
        response = await client.post(PATH, data=json.dumps(note), headers=session_headers(session))
        assert response.status == 202
    return session


async def post_both(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    body: Any,
    hdrs: dict[str, str],
) -> tuple[tuple[int, Any, bool, str], tuple[int, Any, str]]:
    """The same request on the hot path and on the SDK's (the hot path switched off): status,
    JSON-RPC message and content type of each; for the first, whether the hot path answered."""
    taken = spy_on(monkeypatch, mcp_handshake)
    data = json.dumps(body)
    fast = await client.post(PATH, data=data, headers=hdrs)
    fast_reply = (fast.status, message_of(await fast.text()), any(taken), fast.content_type)
    monkeypatch.setattr(mcp_handshake, "session_of", lambda request: None)
    sdk = await client.post(PATH, data=data, headers=hdrs)
    sdk_reply = (sdk.status, message_of(await sdk.text()), sdk.content_type)
    monkeypatch.undo()
    return fast_reply, sdk_reply


@pytest.mark.parametrize(
    "body",
    [
        rpc("tools/call", 7, name="time__now", arguments={"timezone": "UTC"}),
        rpc("tools/list", "list-1"),
        rpc("tools/call", 8, name="nope"),  # the tool's error, as the SDK maps it
        rpc("tools/call", 9),  # no name: the SDK's validation refuses it
    ],
    ids=["call", "list", "unknown-tool", "invalid-params"],
)
async def test_an_open_sessions_request_is_answered_on_the_hot_path_as_the_sdk_answers_it(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, body: dict[str, Any]
) -> None:
    session = await open_session(client)
    (status, message, taken, kind), (sdk_status, sdk_message, sdk_kind) = await post_both(
        client, monkeypatch, body, session_headers(session)
    )
    assert taken
    assert kind == "application/json"
    assert sdk_kind == "text/event-stream"  # the SDK's transport streams its answer
    assert (status, message) == (sdk_status, sdk_message)
    assert status == 200
    assert message["id"] == body["id"]


async def test_the_reply_names_the_session(client: TestClient) -> None:
    session = await open_session(client)
    body = rpc("tools/call", 3, name="time__now")
    response = await client.post(PATH, data=json.dumps(body), headers=session_headers(session))
    assert response.content_type == "application/json"
    assert response.headers["Mcp-Session-Id"] == session


@pytest.mark.parametrize(
    ("body", "extra"),
    [
        (rpc("tools/call", 1, name="time__now", _meta={"progressToken": "p"}), {}),
        (rpc("ping", 1), {}),
        (rpc("notifications/cancelled", None, requestId=1), {}),
        ([rpc("tools/call", 1, name="time__now")], {}),
        (rpc("tools/call", 1, name="time__now"), {"MCP-Protocol-Version": "2026-07-28"}),
        (rpc("tools/call", 1, name="time__now"), {"Accept": "application/json"}),
        (rpc("tools/call", 1, name="time__now"), {"Content-Type": "text/plain"}),
    ],
    ids=["progress", "ping", "notification", "batch", "modern-version", "accept", "content-type"],
)
async def test_every_other_request_of_a_session_is_left_to_the_sdk(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    body: Any,
    extra: dict[str, str],
) -> None:
    session = await open_session(client)
    hdrs = {**session_headers(session), **extra}
    data = json.dumps(body)
    taken = spy_on(monkeypatch, mcp_handshake)
    response = await client.post(PATH, data=data, headers=hdrs)
    await response.read()
    assert not any(taken)
    assert response.status < 500


async def test_a_session_not_yet_initialized_or_unknown_or_ended_is_left_to_the_sdk(
    client: TestClient,
) -> None:
    call = json.dumps(rpc("tools/call", 1, name="time__now"))
    fresh = await open_session(client, initialized=False)
    response = await client.post(PATH, data=call, headers=session_headers(fresh))
    # the SDK's own answer for a session whose client skipped `initialized`: on its stream
    assert response.content_type == "text/event-stream"
    await response.read()

    unknown = await client.post(PATH, data=call, headers=session_headers("f" * 32))
    assert unknown.status == 404

    session = await open_session(client)
    ok = await client.post(PATH, data=call, headers=session_headers(session))
    assert (ok.status, ok.content_type) == (200, "application/json")
    ended = await client.delete(PATH, headers=session_headers(session))
    assert ended.status == 200
    after = await client.post(PATH, data=call, headers=session_headers(session))
    assert after.status == 404


async def test_a_modern_tools_list_takes_the_hot_path_as_the_sdk_answers_it(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {"_meta": META}}
    hdrs = {**headers(), "Mcp-Method": "tools/list"}
    del hdrs["Mcp-Name"]
    taken = spy_on(monkeypatch, mcp_exchange)
    fast = await client.post(PATH, data=json.dumps(body), headers=hdrs)
    fast_reply = (fast.status, message_of(await fast.text()))
    monkeypatch.setattr(mcp_exchange, "takes", lambda request: False)
    sdk = await client.post(PATH, data=json.dumps(body), headers=hdrs)
    assert taken == [True]
    assert fast_reply == (sdk.status, message_of(await sdk.text()))
    assert [t["name"] for t in fast_reply[1]["result"]["tools"]] == ["time__now"]


async def test_a_sessions_call_carries_a_relay_envelope_once_the_tool_is_listed() -> None:
    """Like a 2026-07-28 call, a handshake session's call to a listed tool reaches the gateway
    with an envelope (so an HTTP server of that revision gets it relayed): the latest 2026-era
    revision and the client's info from its handshake."""
    gateway = OneToolGateway()
    app = web.Application()
    add_mcp_routes(app, gateway, started=lambda: True)
    async with TestClient(TestServer(app)) as test_client:
        session = await open_session(test_client)
        for _ in range(2):
            body = json.dumps(rpc("tools/call", 1, name="time__now"))
            response = await test_client.post(PATH, data=body, headers=session_headers(session))
            assert (response.status, response.content_type) == (200, "application/json")
    envelope = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
    }
    # the first call: the tool not yet listed, so no envelope (its schema is unknown)
    assert gateway.envelopes == [None, envelope]


async def test_a_sessions_delete_cancels_its_call_in_flight_on_the_hot_path() -> None:
    """A DELETE while a call of the session runs on the hot path: the call is cancelled (as the
    SDK's own ending of a session cancels what it serves) and answered as the SDK's transport
    answers a request whose session ended under it; the session leaves the endpoint's book."""
    gateway = BlockingGateway()
    app = web.Application()
    add_mcp_routes(app, gateway, started=lambda: True)
    async with TestClient(TestServer(app)) as test_client:
        session = await open_session(test_client)
        body = json.dumps(rpc("tools/call", 1, name="time__now"))
        call = asyncio.create_task(
            test_client.post(PATH, data=body, headers=session_headers(session))
        )
        await asyncio.wait_for(gateway.started.wait(), 5)
        ended = await test_client.delete(PATH, headers=session_headers(session))
        assert ended.status == 200
        await asyncio.wait_for(gateway.cancelled.wait(), 5)
        response = await asyncio.wait_for(call, 5)
        assert response.status == 500
        assert response.headers["Mcp-Session-Id"] == session
        assert (await response.json())["error"] == {
            "code": -32603,
            "message": sdk_server.SESSION_ENDED,
        }
        endpoint = app[MCP_ENDPOINTS]._endpoints["tb"]
        assert len(endpoint.sessions) == 0
        assert endpoint.sessions._calls == {}


async def test_a_sessions_notifications_cancelled_cancels_its_call_in_flight_on_the_hot_path() -> (
    None
):
    """The handshake era's way to cancel (the official SDK client's, which keeps its connection):
    a `notifications/cancelled` in the session for the call's id ("7" and 7 are one id, as in the
    SDK) cancels the call on the hot path, answered as the SDK's transport answers a cancelled
    request; a cancel for another id, or the same id in another session, leaves it running; the
    session stays open."""
    gateway = BlockingGateway()
    app = web.Application()
    add_mcp_routes(app, gateway, started=lambda: True)
    async with TestClient(TestServer(app)) as test_client:
        session, other = await open_session(test_client), await open_session(test_client)
        body = json.dumps(rpc("tools/call", 7, name="time__now"))
        call = asyncio.create_task(
            test_client.post(PATH, data=body, headers=session_headers(session))
        )
        await asyncio.wait_for(gateway.started.wait(), 5)
        for where, rid in ((session, 8), (other, 7)):
            note = json.dumps(rpc("notifications/cancelled", rid=None, requestId=rid))
            sent = await test_client.post(PATH, data=note, headers=session_headers(where))
            assert sent.status == 202
        await asyncio.sleep(0.2)  # (a cancel, were one made, would have landed)
        assert not gateway.cancelled.is_set()
        note = json.dumps(rpc("notifications/cancelled", rid=None, requestId="7", reason="r"))
        sent = await test_client.post(PATH, data=note, headers=session_headers(session))
        assert sent.status == 202
        await asyncio.wait_for(gateway.cancelled.wait(), 5)
        response = await asyncio.wait_for(call, 5)
        assert response.status == 200
        assert response.headers["Mcp-Session-Id"] == session
        assert await response.json() == {
            "jsonrpc": "2.0",
            "id": 7,
            "error": {"code": -32800, "message": sdk_server.CANCELLED},
        }
        endpoint = app[MCP_ENDPOINTS]._endpoints["tb"]
        assert len(endpoint.sessions) == 2  # both still open
        assert endpoint.sessions._calls == {}


async def test_a_call_of_another_session_runs_on_when_one_session_ends() -> None:
    gateway = BlockingGateway()
    app = web.Application()
    add_mcp_routes(app, gateway, started=lambda: True)
    async with TestClient(TestServer(app)) as test_client:
        kept, ended = await open_session(test_client), await open_session(test_client)
        body = json.dumps(rpc("tools/call", 1, name="time__now"))
        call = asyncio.create_task(test_client.post(PATH, data=body, headers=session_headers(kept)))
        await asyncio.wait_for(gateway.started.wait(), 5)
        response = await test_client.delete(PATH, headers=session_headers(ended))
        assert response.status == 200
        await asyncio.sleep(0.2)  # (a cancel, were one sent, would have landed)
        assert not gateway.cancelled.is_set()
        assert not call.done()
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call


@pytest.mark.parametrize(
    "raw",
    [b"\xef\xbb\xbf" + json.dumps(rpc("tools/call", 1, name="time__now")).encode()],
    ids=["bom"],
)
async def test_a_body_the_sdks_parser_refuses_is_refused_the_sdks_way(
    client: TestClient, raw: bytes
) -> None:
    session = await open_session(client)
    response = await client.post(PATH, data=raw, headers=session_headers(session))
    assert response.status == 400
    assert response.content_type == "application/json"
    assert (await response.json())["error"]["code"] == -32700  # the SDK's parse error
