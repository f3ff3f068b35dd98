"""The toolbox routes over HTTP on a real agent process: validation with field paths, auth,
If-Match, no-op applies, rollback and delete."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent_process import AgentProcess, running_agent
from tests.engine_fixture import new_toolbox_id, spec, time_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, images: dict[str, str], docker_client: Any
) -> Iterator[AgentProcess]:
    with running_agent(tmp_path_factory.mktemp("api") / "state", docker_client) as a:
        yield a


def put(
    a: AgentProcess, tb: str, body: Any, headers: dict[str, str] | None = None, query: str = ""
) -> tuple[int, Any]:
    a.made.append(tb)
    raw = body if isinstance(body, str) else json.dumps(body)
    status, _, resp = _put_raw(a, f"/v1/toolboxes/{tb}{query}", raw, headers)
    return status, resp


def _put_raw(
    a: AgentProcess, path: str, raw: str, headers: dict[str, str] | None
) -> tuple[int, dict[str, str], Any]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        a.base_url + path,
        data=raw.encode(),
        method="PUT",
        headers={
            "Authorization": f"Bearer {a.token}",
            "Content-Type": "application/yaml",
            **(headers or {}),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def test_invalid_specs_get_422_with_field_paths(agent: AgentProcess) -> None:
    cases = [
        ("servers: []", ["servers"]),
        ("servers: [{name: Bad_Name, image: x}]", ["servers", 0, "name"]),
        (
            "servers: [{name: a, image: x, health: {interval: soon}}]",
            ["servers", 0, "health", "interval"],
        ),
        ("servers: [{name: a, image: x, privileged: true}]", ["servers", 0, "privileged"]),
        (
            "servers: [{name: a, image: x, labels: {dtma.toolbox: y}}]",
            ["servers", 0, "labels", "dtma.toolbox"],
        ),
        (
            "servers: [{name: a, image: x, mounts: [{type: bind, source: /var/run/docker.sock, "
            "target: /s}]}]",
            ["servers", 0, "mounts", 0, "source"],
        ),
        (
            "servers: [{name: a, image: x, secrets: [{name: T, vault: {mount: secret, path: p, "
            "key: k}}]}]",
            ["servers", 0, "secrets"],
        ),
        ("{not json", ["body"]),
        ("servers: [{name: a, image: x, surprise: 1}]", ["servers", 0, "surprise"]),
    ]
    for body, loc in cases:
        status, resp = put(agent, new_toolbox_id(), body)
        assert status == 422, (body, resp)
        assert resp["error"]["code"] == "invalid_spec"
        assert loc in [d["loc"] for d in resp["error"]["details"]], (body, resp)


def test_bad_toolbox_ids_and_unknown_toolboxes(agent: AgentProcess) -> None:
    status, resp = put(agent, "Not_A_Label", spec(time_server("t")))
    assert status == 422
    assert resp["error"]["details"][0]["loc"] == ["path", "id"]
    for path in ("/v1/toolboxes/nope", "/v1/toolboxes/nope/revisions", "/v1/operations/op-nope"):
        assert agent.get(path, token=agent.token)[0] == 404
    status, _, _ = agent.request("DELETE", "/v1/toolboxes/nope", token=agent.token)
    assert status == 404


def test_apply_wait_no_op_if_match_rollback_and_delete(agent: AgentProcess) -> None:
    tb = new_toolbox_id()
    body = spec(time_server("time"))
    status, resp = put(agent, tb, body, query="?wait=60")
    assert status == 200, resp
    assert resp["operation"]["state"] == "succeeded"
    assert resp["phase"] == "healthy"
    assert resp["revision"] == 1

    status, resp = put(agent, tb, body)
    assert status == 200
    assert resp["unchanged"] is True
    assert resp["revision"] == 1

    two = spec(time_server("time", env={"TZ": "UTC"}))
    status, resp = put(agent, tb, two, headers={"If-Match": "7"})
    assert status == 412
    assert resp["error"]["code"] == "precondition_failed"
    status, resp = put(agent, tb, two, headers={"If-Match": "1"})
    assert status == 202
    assert set(resp) == {"toolbox", "revision", "operation"}
    assert resp["revision"] == 2
    _, _, op = agent.request("GET", f"/v1/operations/{resp['operation']}", token=agent.token)
    assert op["kind"] == "apply"
    assert op["toolbox"] == tb

    status, _, resp = agent.request(
        "POST", f"/v1/toolboxes/{tb}/rollback", token=agent.token, body={"revision": "one"}
    )
    assert status == 422
    assert resp["error"]["details"][0]["loc"] == ["body", "revision"]

    status, _, resp = agent.request(
        "POST", f"/v1/toolboxes/{tb}/rollback", token=agent.token, body={"revision": 1}
    )
    assert status == 202
    _wait_op(agent, resp["operation"], "succeeded")
    status, revs = agent.get(f"/v1/toolboxes/{tb}/revisions", token=agent.token)
    assert [(r["revision"], r["stable"]) for r in revs["items"]] == [(1, True), (2, True)]
    assert agent.get(f"/v1/toolboxes/{tb}", token=agent.token)[1]["servers"][0]["revision"] == 1

    status, tools = agent.get(f"/v1/toolboxes/{tb}/tools", token=agent.token)
    assert "get_current_time" in tools["servers"][0]["tools"]
    status, _, logs = agent.request(
        "GET", f"/v1/toolboxes/{tb}/servers/time/logs?tail=5", token=agent.token
    )
    assert status == 200
    assert isinstance(logs, str)
    assert (
        agent.request("GET", f"/v1/toolboxes/{tb}/servers/time/logs?tail=-1", token=agent.token)[0]
        == 422
    )

    status, _, resp = agent.request("DELETE", f"/v1/toolboxes/{tb}", token=agent.token)
    assert status == 202
    _wait_op(agent, resp["operation"], "succeeded")
    assert agent.get(f"/v1/toolboxes/{tb}", token=agent.token)[0] == 404


def test_the_toolbox_routes_need_the_token(agent: AgentProcess) -> None:
    for method, path in [
        ("GET", "/v1/toolboxes"),
        ("PUT", "/v1/toolboxes/x"),
        ("DELETE", "/v1/toolboxes/x"),
        ("POST", "/v1/toolboxes/x/rollback"),
        ("GET", "/v1/events"),
        ("GET", "/v1/operations/x"),
    ]:
        assert agent.request(method, path, body={} if method in ("PUT", "POST") else None)[0] == 401


def _wait_op(a: AgentProcess, op_id: str, state: str, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body = a.get(f"/v1/operations/{op_id}", token=a.token)
        if body["state"] != "running":
            assert body["state"] == state, body
            return
        time.sleep(0.2)
    pytest.fail(f"operation {op_id} still running")
