"""The API contract on a live agent: auth on every documented route, SSE with resume, 413,
/v1/agent, and a property-based run of generated requests that must never get a 5xx."""

from __future__ import annotations

import asyncio
import json
import string
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.agent_process import AgentProcess, running_agent
from tests.engine_fixture import new_toolbox_id, spec, time_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, images: dict[str, str], docker_client: Any
) -> Iterator[AgentProcess]:
    state = tmp_path_factory.mktemp("contract") / "state"
    with running_agent(state, docker_client, DTMA_MAX_BODY="64k") as a:
        yield a


@pytest.fixture(scope="module")
def document(agent: AgentProcess) -> dict[str, Any]:
    status, doc = agent.get("/v1/openapi.json", token=agent.token)
    assert status == 200
    return dict(doc)


def _routes(document: dict[str, Any]) -> list[tuple[str, str, bool]]:
    out = []
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            out.append((method.upper(), path, op.get("security") != []))
    return out


def test_every_documented_route_but_health_and_ready_needs_the_token(
    agent: AgentProcess, document: dict[str, Any]
) -> None:
    routes = _routes(document)
    assert len(routes) >= 18
    for method, path, needs_auth in routes:
        concrete = path.replace("{id}", "x").replace("{name}", "y").replace("{op}", "z")
        body = {} if method in ("PUT", "POST") else None
        bare = agent.request(method, concrete, body=body)[0]
        wrong = agent.request(method, concrete, body=body, token="not-the-token-" + "x" * 20)[0]
        if needs_auth:
            assert bare == 401, (method, path)
            assert wrong in (401, 403), (method, path)
        elif path.startswith("/.well-known/oauth-protected-resource/"):
            assert bare == 404, (method, path)  # no token needed, and no OAuth issuer here
        else:
            assert bare in (200, 503), (method, path)


def test_agent_info(agent: AgentProcess) -> None:
    status, info = agent.get("/v1/agent", token=agent.token)
    assert status == 200
    assert info["version"] == "0.1.0"
    assert info["host"]
    assert info["docker"]["version"]
    assert info["toolboxes"] >= 0
    assert info["controller"] is None  # no DTMA_CONTROLLER_URL: no heartbeats


def test_an_oversized_body_gets_413(agent: AgentProcess) -> None:
    big = "servers: []\n" + "#" * (70 * 1024)
    status, _, body = agent.request(
        "PUT",
        "/v1/toolboxes/big",
        token=agent.token,
        body=None,
        headers={"Content-Type": "application/yaml"},
        raw=big.encode(),
    )
    assert status == 413
    assert body["error"]["code"] == "payload_too_large"


async def _read_sse(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    stop_after: int | None,
    timeout: float,
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with session.get(url, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        try:
            async with asyncio.timeout(timeout):
                async for raw in resp.content:
                    line = raw.decode().rstrip("\n")
                    if not line:
                        if "data" in fields:
                            event = json.loads(fields["data"])
                            assert int(fields["id"]) == event["cursor"]
                            events.append(event)
                            if stop_after is not None and len(events) >= stop_after:
                                return events  # a forced disconnect
                        fields = {}
                    elif not line.startswith(":"):
                        key, _, value = line.partition(": ")
                        fields[key] = value
        except TimeoutError:
            pass
    return events


async def test_sse_streams_live_and_resumes_without_gap_or_duplicate(
    agent: AgentProcess,
) -> None:
    tb = new_toolbox_id()
    agent.made.append(tb)
    _, page = await asyncio.to_thread(agent.get, "/v1/events?limit=1000", agent.token)
    start = page["next"]
    url = f"{agent.base_url}/v1/events?since={start}"
    auth = {"Authorization": f"Bearer {agent.token}", "Accept": "text/event-stream"}
    async with aiohttp.ClientSession() as session:
        reader = asyncio.create_task(_read_sse(session, url, auth, stop_after=3, timeout=30))
        await asyncio.sleep(0.3)
        status, _, _resp = await asyncio.to_thread(
            agent.request,
            "PUT",
            f"/v1/toolboxes/{tb}",
            token=agent.token,
            body=json.loads(spec(time_server("time"))),
        )
        assert status == 202
        first = await reader  # disconnected after three live events
        assert len(first) == 3
        await asyncio.sleep(3)  # the rollout goes on while nobody listens
        second = await _read_sse(
            session,
            url,
            {**auth, "Last-Event-ID": str(first[-1]["cursor"])},
            stop_after=None,
            timeout=4,
        )
    cursors = [e["cursor"] for e in first + second]
    assert cursors == list(range(start + 1, start + 1 + len(cursors))), cursors
    kinds = [e["kind"] for e in first + second]
    assert kinds[0] == "rollout_started"
    assert "rollout_passed" in kinds
    _, page = await asyncio.to_thread(
        agent.get, f"/v1/events?since={start}&limit=1000", agent.token
    )
    assert [e["cursor"] for e in page["items"]][: len(cursors)] == cursors
    await asyncio.sleep(0.5)
    assert "unhandled_error" not in agent.logs()  # a client that leaves is a normal end


SEGMENT = st.text(alphabet=string.printable + "é€\x00", min_size=0, max_size=24)
JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=15,
)


@st.composite
def requests(draw: st.DrawFn, routes: list[tuple[str, str, bool]]) -> tuple[str, str, bytes | None]:
    method, path, _ = draw(st.sampled_from(routes))
    concrete = path
    for param in ("{id}", "{name}", "{op}"):
        if param in concrete:
            value = draw(st.one_of(SEGMENT, st.from_regex(r"\A[a-z0-9-]{1,70}\Z")))
            concrete = concrete.replace(param, _quote(value))
    query = draw(
        st.dictionaries(
            st.sampled_from(["wait", "since", "tail", "limit", "toolbox", "x"]), SEGMENT, max_size=3
        )
    )
    if query:
        concrete += "?" + "&".join(f"{k}={_quote(v)}" for k, v in query.items())
    body: bytes | None = None
    if method in ("PUT", "POST"):
        body = draw(
            st.one_of(
                st.binary(max_size=200),
                JSONISH.map(lambda v: json.dumps(v).encode()),
                st.builds(lambda v: json.dumps({"servers": v}).encode(), JSONISH),
            )
        )
    return method, concrete, body


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def test_generated_requests_never_get_a_5xx(agent: AgentProcess, document: dict[str, Any]) -> None:
    routes = [r for r in _routes(document) if not r[1].endswith("/events")]
    seen: list[int] = []

    @settings(
        max_examples=600,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(requests(routes))
    def check(req: tuple[str, str, bytes | None]) -> None:
        method, path, body = req
        if method == "PUT" and "?wait=" in path:
            path = path.replace("?wait=", "?nowait=")  # never block on a real rollout here
        status, _, resp = agent.request(
            method,
            path,
            token=agent.token,
            raw=body,
            headers={"Content-Type": "application/json"},
            timeout=15,
        )
        seen.append(status)
        assert status < 500, (method, path, body, resp)

    check()
    assert len(seen) >= 500
    statuses = agent.get("/v1/ready")[0]
    assert statuses == 200
