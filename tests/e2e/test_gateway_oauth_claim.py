"""An issuer that puts one fixed audience in every token and names the toolboxes in a claim of
its own (docs/gateway.md's `audience` and `toolbox_claim`, with an explicit `jwks_url`), on a
real agent process, against a real issuer: OpenBao's OIDC identity provider
(tests/e2e/oauth_support.py). test_gateway_oauth.py covers the defaults (each endpoint's own
URL as the audience, the toolbox named by scope).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent_process import AgentProcess, running_agent
from tests.conftest import BaoServer, in_thread
from tests.e2e.access_support import apply, mcp_client, spec
from tests.e2e.oauth_support import BaoIssuer
from tests.engine_fixture import new_toolbox_id, time_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CLAIM = "dtma_toolboxes"
TIME_TOOLS = {"time__get_current_time", "time__convert_time"}


@pytest.fixture(scope="module")
def idp(bao: BaoServer) -> BaoIssuer:
    return BaoIssuer(bao).setup()


@pytest.fixture(scope="module")
def audience() -> str:
    return f"api://dtma-{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory,
    images: dict[str, str],
    docker_client: Any,
    idp: BaoIssuer,
    audience: str,
) -> Iterator[AgentProcess]:
    state = tmp_path_factory.mktemp("oauth-claim") / "state"
    issuers = [
        {
            "issuer": idp.issuer,
            "audience": audience,
            "toolbox_claim": CLAIM,
            "jwks_url": f"{idp.issuer}/.well-known/keys",
            "leeway": 1,
        }
    ]
    with running_agent(state, docker_client, DTMA_OAUTH_ISSUERS=json.dumps(issuers)) as a:
        yield a


@pytest.fixture(scope="module")
def toolboxes(agent: AgentProcess) -> tuple[str, str]:
    """Two toolboxes of mcp-time: the one the tokens name, and another."""
    ours, other = new_toolbox_id(), new_toolbox_id()
    for tb in (ours, other):
        apply(agent, tb, spec(time_server("time")))
    return ours, other


def post_ping(agent: AgentProcess, tb: str, token: str) -> tuple[int, dict[str, str], Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"Accept": "application/json, text/event-stream"}
    return agent.request("POST", f"/v1/toolboxes/{tb}/mcp", token=token, body=body, headers=headers)


async def test_a_token_for_the_fixed_audience_reaches_the_toolboxes_its_claim_lists(
    agent: AgentProcess, toolboxes: tuple[str, str], idp: BaoIssuer, audience: str
) -> None:
    ours, other = toolboxes
    as_list = await in_thread(idp.mint, await in_thread(idp.role, audience, {CLAIM: [ours]}))
    as_string = await in_thread(idp.mint, await in_thread(idp.role, audience, {CLAIM: ours}))
    for token in (as_list, as_string):
        async with mcp_client(agent, ours, token) as client:
            assert {t.name for t in (await client.list_tools()).tools} == TIME_TOOLS
            result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert not result.is_error
    # The same token at the other toolbox's endpoint: the audience holds, the claim does not.
    status, headers, body = await in_thread(post_ping, agent, other, as_list)
    assert status == 403, body
    assert "the token does not grant this toolbox" in body["error"]["message"]
    assert 'error="insufficient_scope"' in headers["WWW-Authenticate"]


async def test_the_fixed_audience_and_the_claim_are_what_counts(
    agent: AgentProcess, toolboxes: tuple[str, str], idp: BaoIssuer, audience: str
) -> None:
    ours, _ = toolboxes
    endpoint = f"{agent.base_url}/v1/toolboxes/{ours}/mcp"
    cases = {
        # the default audience (the endpoint's own URL) is not accepted once one is set
        "the endpoint's URL as audience": (endpoint, {CLAIM: [ours]}, 401),
        "another client's audience": ("some-other-client", {CLAIM: [ours]}, 401),
        # with a claim set, the scope names nothing
        "the scope without the claim": (audience, {"scope": f"toolbox:{ours}"}, 403),
        "the claim naming another toolbox": (audience, {CLAIM: ["someone-else"]}, 403),
    }
    for case, (aud, claims, want) in cases.items():
        token = await in_thread(idp.mint, await in_thread(idp.role, aud, claims))
        status, _, body = await in_thread(post_ping, agent, ours, token)
        assert status == want, (case, body)
        reason = (
            "token not issued for this resource"
            if want == 401
            else "the token does not grant this toolbox"
        )
        assert reason in body["error"]["message"], (case, body)


async def test_metadata_lists_no_scope_when_a_claim_names_the_toolboxes(
    agent: AgentProcess, toolboxes: tuple[str, str], idp: BaoIssuer
) -> None:
    ours, _ = toolboxes
    path = f"/.well-known/oauth-protected-resource/v1/toolboxes/{ours}/mcp"
    status, _, meta = await in_thread(agent.request, "GET", path)
    assert status == 200, meta
    assert meta["authorization_servers"] == [idp.issuer]
    assert meta["resource"] == f"{agent.base_url}/v1/toolboxes/{ours}/mcp"
    assert not meta.get("scopes_supported"), meta
