"""The toolbox MCP endpoint as an OAuth 2.1 resource server, on a real agent process with real
containers, the official SDK's client, and a real issuer: OpenBao's OIDC identity provider
(tests/e2e/oauth_support.py). Discovery from the 401 to a listed and called tool; every
refusal (forged tokens: alg none, HS256 with the public key, a key of our own; real ones: the
wrong audience, expired, another toolbox); the claims-based allow list; dtma's own tokens
beside JWTs; the call journal; a key rotated at the issuer, taken without a restart."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.agent_process import AgentProcess, running_agent
from tests.conftest import BaoServer, in_thread
from tests.e2e.access_support import (
    all_calls,
    apply,
    cli,
    get_stream,
    issue,
    mcp_client,
    run_doc_line,
    spec,
    state_bytes,
)
from tests.e2e.oauth_support import (
    BaoIssuer,
    claims_for,
    hs256_with,
    own_rsa,
    unsigned,
)
from tests.engine_fixture import new_toolbox_id, notes_server, time_server
from tests.mcp_stream import stream_ends, watching

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TIME_TOOLS = {"time__get_current_time", "time__convert_time"}
GATEWAY_DOC = Path(__file__).resolve().parents[2] / "docs/gateway.md"
LEEWAY_S = 1  # the issuer's leeway here, so that a real token can expire within the test


@pytest.fixture(scope="module")
def idp(bao: BaoServer) -> BaoIssuer:
    return BaoIssuer(bao).setup()


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory,
    images: dict[str, str],
    docker_client: Any,
    idp: BaoIssuer,
) -> Iterator[AgentProcess]:
    state = tmp_path_factory.mktemp("oauth") / "state"
    issuers = [{"issuer": idp.issuer, "leeway": LEEWAY_S}]
    with running_agent(state, docker_client, DTMA_OAUTH_ISSUERS=json.dumps(issuers)) as a:
        yield a


@pytest.fixture(scope="module")
def toolbox(agent: AgentProcess) -> str:
    """time (stdio) and notes (HTTP); JWT callers in group ops get time's tools, in group
    notes notes' tools."""
    tb = new_toolbox_id()
    access = [
        {"claims": {"groups": "ops"}, "tools": {"allow": ["time__*"]}},
        {"claims": {"groups": "notes"}, "tools": {"allow": ["notes__*"]}},
    ]
    apply(agent, tb, spec(time_server("time"), notes_server("notes"), gateway={"access": access}))
    return tb


@pytest.fixture(scope="module")
def other(agent: AgentProcess) -> str:
    tb = new_toolbox_id()
    apply(agent, tb, spec(time_server("time")))
    return tb


def resource(agent: AgentProcess, tb: str) -> str:
    return f"{agent.base_url}/v1/toolboxes/{tb}/mcp"


def token_for(idp: BaoIssuer, agent: AgentProcess, tb: str, **claims: Any) -> str:
    """A real token from OpenBao for `tb`'s endpoint (aud: its canonical URL)."""
    return idp.mint(idp.role(resource(agent, tb), {"scope": f"toolbox:{tb}", **claims}))


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def segment(token: str, i: int) -> dict[str, Any]:
    """The JSON of a JWT's header (0) or payload (1)."""
    return dict(json.loads(base64.urlsafe_b64decode(token.split(".")[i] + "==")))


def post_mcp(agent: AgentProcess, tb: str, token: str | None) -> tuple[int, dict[str, str], Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"Accept": "application/json, text/event-stream"}
    return agent.request("POST", f"/v1/toolboxes/{tb}/mcp", token=token, body=body, headers=headers)


async def tool_names(agent: AgentProcess, tb: str, token: str) -> set[str]:
    async with mcp_client(agent, tb, token) as client:
        return {t.name for t in (await client.list_tools()).tools}


async def legacy_tool_names(agent: AgentProcess, tb: str, token: str) -> set[str]:
    """As tool_names, in a handshake-era session (`initialize`, Mcp-Session-Id)."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    transport = streamable_http_client(resource(agent, tb), http_client=http)
    async with http, Client(transport, mode="legacy") as client:  # type: ignore[arg-type]
        return {t.name for t in (await client.list_tools()).tools}


async def test_discovery_from_the_401_to_a_tool_called_with_a_token_from_openbao(
    agent: AgentProcess, toolbox: str, idp: BaoIssuer
) -> None:
    status, headers, _ = await in_thread(post_mcp, agent, toolbox, None)
    assert status == 401
    m = re.fullmatch(r'Bearer resource_metadata="([^"]+)"', headers["WWW-Authenticate"])
    assert m is not None, headers["WWW-Authenticate"]
    metadata_url = m.group(1)
    assert metadata_url == (
        f"{agent.base_url}/.well-known/oauth-protected-resource/v1/toolboxes/{toolbox}/mcp"
    )

    status, _, meta = await in_thread(agent.request, "GET", metadata_url[len(agent.base_url) :])
    assert status == 200, meta
    assert meta == {
        "resource": resource(agent, toolbox),
        "authorization_servers": [idp.issuer],
        "scopes_supported": [f"toolbox:{toolbox}"],
        "bearer_methods_supported": ["header"],
        "resource_name": f"dtma toolbox {toolbox}",
    }
    # The issuer named there publishes its metadata and keys (what a client goes on with).
    discovery = f"{meta['authorization_servers'][0]}/.well-known/openid-configuration"
    assert (await in_thread(get_json, discovery))["issuer"] == idp.issuer

    token = await in_thread(token_for, idp, agent, toolbox, groups=["ops"])
    async with mcp_client(agent, toolbox, token) as client:
        listed = {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
    assert listed == TIME_TOOLS
    assert not result.is_error
    assert "UTC" in result.content[0].text  # type: ignore[union-attr]


async def test_every_refusal_is_a_401_or_403_that_quotes_nothing(
    agent: AgentProcess, toolbox: str, other: str, idp: BaoIssuer
) -> None:
    audience = resource(agent, toolbox)
    good = claims_for(idp.issuer, audience, f"toolbox:{toolbox}")
    kid = str((await in_thread(idp.jwks))["keys"][0]["kid"])
    pem = await in_thread(idp.public_pem, kid)
    expiring = await in_thread(
        idp.role, audience, {"scope": f"toolbox:{toolbox}", "groups": ["ops"]}, "2s"
    )
    expired = await in_thread(idp.mint, expiring)
    wrong_aud = await in_thread(
        idp.mint, await in_thread(idp.role, "some-other-client", {"scope": f"toolbox:{toolbox}"})
    )
    for_other = await in_thread(token_for, idp, agent, other, groups=["ops"])
    # aud right for this endpoint, scope for the other toolbox only: a valid token, wrong scope
    other_scope = await in_thread(
        idp.mint, await in_thread(idp.role, audience, {"scope": f"toolbox:{other}"})
    )
    unknown_kid = await in_thread(own_rsa, good, "no-such-kid")
    our_key = await in_thread(own_rsa, good, kid)
    evil = await in_thread(own_rsa, {**good, "iss": "https://evil.example"}, kid)
    await asyncio.sleep(2 + LEEWAY_S + 1)

    cases = {
        "alg none": (unsigned(good), 401, "token algorithm not accepted"),
        "HS256 with the public key": (
            hs256_with(pem, good, kid),
            401,
            "token algorithm not accepted",
        ),
        "an unknown kid": (unknown_kid, 401, "unknown signing key"),
        "the issuer's kid, our key": (our_key, 401, "token signature does not verify"),
        "another issuer": (evil, 401, "token issuer not accepted"),
        "expired": (expired, 401, "token expired"),
        "the wrong audience": (wrong_aud, 401, "token not issued for this resource"),
        "another toolbox's endpoint": (for_other, 401, "token not issued for this resource"),
        "another toolbox's scope": (other_scope, 403, "the token does not grant this toolbox"),
        "not a JWT": ("opaque-garbage", 401, "invalid bearer token"),
    }
    for case, (token, want, reason) in cases.items():
        status, headers, body = await in_thread(post_mcp, agent, toolbox, token)
        assert status == want, (case, body)
        assert reason in body["error"]["message"], (case, body)
        challenge = headers["WWW-Authenticate"]
        assert "resource_metadata=" in challenge, (case, challenge)
        assert (
            'error="invalid_token"' if want == 401 else 'error="insufficient_scope"'
        ) in challenge, (case, challenge)
        answer = json.dumps([body, headers])
        for part in token.split("."):
            if len(part) > 8:
                assert part not in answer, case
        assert "mallory" not in answer, case
        assert "evil.example" not in answer, case
    assert "mallory" not in agent.logs()
    assert "no-such-kid" not in agent.logs()
    # JWTs open MCP endpoints only: the control API refuses even a valid one.
    token = await in_thread(token_for, idp, agent, toolbox, groups=["ops"])
    status, _ = await in_thread(agent.get, "/v1/toolboxes", token)
    assert status == 401


async def test_claims_narrow_the_tools_on_list_and_call(
    agent: AgentProcess, toolbox: str, idp: BaoIssuer
) -> None:
    ops = await in_thread(token_for, idp, agent, toolbox, groups=["ops"])
    both = await in_thread(token_for, idp, agent, toolbox, groups=["ops", "notes"])
    nobody = await in_thread(token_for, idp, agent, toolbox, groups=["sales"])
    notes_tools = await tool_names(agent, toolbox, both) - TIME_TOOLS
    assert notes_tools
    assert all(n.startswith("notes__") for n in notes_tools)
    assert await tool_names(agent, toolbox, ops) == TIME_TOOLS
    assert await tool_names(agent, toolbox, nobody) == set()
    assert await legacy_tool_names(agent, toolbox, ops) == TIME_TOOLS
    async with mcp_client(agent, toolbox, ops) as client:
        with pytest.raises(MCPError) as refused:
            await client.call_tool(sorted(notes_tools)[0], {})
        assert refused.value.error.code == -32602
    async with mcp_client(agent, toolbox, nobody) as client:
        with pytest.raises(MCPError):
            await client.call_tool("time__get_current_time", {"timezone": "UTC"})
    # The API token and dtma's own client tokens are not narrowed by gateway.access.
    created = await in_thread(issue, agent, toolbox, "beside-jwts")
    assert await tool_names(agent, toolbox, created["token"]) == TIME_TOOLS | notes_tools
    assert await tool_names(agent, toolbox, agent.token) == TIME_TOOLS | notes_tools


async def test_the_journal_records_subject_and_issuer_never_the_token(
    agent: AgentProcess, other: str, idp: BaoIssuer
) -> None:
    token = await in_thread(token_for, idp, agent, other)
    async with mcp_client(agent, other, token) as client:
        await client.call_tool("time__get_current_time", {"timezone": "UTC"})
    sub = segment(token, 1)["sub"]
    calls = [c for c in await in_thread(all_calls, agent, other) if c["token"] == "oauth"]
    assert [(c["tool"], c["outcome"], c["subject"], c["issuer"]) for c in calls] == [
        ("get_current_time", "ok", sub, idp.issuer)
    ]
    assert token.split(".")[2].encode() not in await in_thread(state_bytes, agent)
    listed = await in_thread(cli, agent, "calls", other)
    assert listed.returncode == 0, listed.stderr
    assert f"oauth:{sub}" in listed.stdout


async def test_a_key_rotated_at_the_issuer_is_taken_without_a_restart(
    agent: AgentProcess, other: str, idp: BaoIssuer
) -> None:
    before = await in_thread(token_for, idp, agent, other)
    assert await tool_names(agent, other, before) == TIME_TOOLS
    old_kids = {k["kid"] for k in (await in_thread(idp.jwks))["keys"]}
    loads = agent.logs().count("oauth_jwks_loaded")
    # OpenBao publishes the next key ahead of its use, so one rotation signs with a key the
    # agent may have cached already; after two, the signing key is one it has never seen.
    await in_thread(idp.rotate)
    await in_thread(idp.rotate)
    after = await in_thread(token_for, idp, agent, other)
    assert segment(after, 0)["kid"] not in old_kids
    pid = agent.proc.pid if agent.proc else None
    # A refresh on an unknown kid is rate-limited (gateway/oauth.py REFRESH_MIN_S = 10 s), and
    # an earlier test may just have spent it: retry for a while.
    deadline = time.monotonic() + 30
    while True:
        status, _, body = await in_thread(post_mcp, agent, other, after)
        if status != 401 or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert status not in (401, 403, 503), body
    assert await tool_names(agent, other, after) == TIME_TOOLS
    assert await tool_names(agent, other, before) == TIME_TOOLS  # the old key still verifies
    assert agent.proc is not None
    assert agent.proc.pid == pid
    assert agent.proc.poll() is None
    assert agent.logs().count("oauth_jwks_loaded") > loads  # fetched again, on the unknown kid


async def test_a_jwts_get_stream_ends_when_the_jwt_expires(
    agent: AgentProcess, other: str, idp: BaoIssuer
) -> None:
    ttl = 8  # room for the handshake and the GET on a loaded machine
    role = await in_thread(
        idp.role, resource(agent, other), {"scope": f"toolbox:{other}"}, f"{ttl}s"
    )
    token = await in_thread(idp.mint, role)
    async with (
        get_stream(agent, other, token) as expiring,
        get_stream(agent, other, agent.token) as operator,
        watching(operator) as (operator_watch,),
    ):
        assert await stream_ends(expiring, within=ttl + LEEWAY_S + 10)
        assert not await operator_watch.ends_within(0.2)
    assert "token expired" in agent.logs()


async def test_metadata_is_served_for_any_well_formed_id_and_404_otherwise(
    agent: AgentProcess, idp: BaoIssuer
) -> None:
    status, _, meta = await in_thread(
        agent.request, "GET", "/.well-known/oauth-protected-resource/v1/toolboxes/nosuchbox/mcp"
    )
    assert status == 200
    assert meta["scopes_supported"] == ["toolbox:nosuchbox"]
    status, _, _ = await in_thread(
        agent.request, "GET", "/.well-known/oauth-protected-resource/v1/toolboxes/Bad_Id/mcp"
    )
    assert status == 404


async def test_the_docs_metadata_line_runs_as_written(agent: AgentProcess, toolbox: str) -> None:
    doc = await in_thread(GATEWAY_DOC.read_text)
    section = doc.split("## Connecting with OAuth", 1)[1].split("\n## ", 1)[0]
    (line,) = re.findall(r"```sh\n(.*?)```", section, re.S)[0].strip().splitlines()
    env = {**os.environ, "DTMA_URL": agent.base_url, "TOOLBOX": toolbox}
    ran = await in_thread(run_doc_line, line, env)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["resource"] == resource(agent, toolbox)
