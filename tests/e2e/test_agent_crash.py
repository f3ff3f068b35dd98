"""The agent as a real process, killed with SIGKILL: it comes back to one consistent revision
with no orphans, and a stable toolbox is adopted untouched (same containers, zero restarts)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtma.domain.containers import LABEL_TOOLBOX
from tests.agent_process import AgentProcess, running_agent
from tests.conftest import wait_until
from tests.engine_fixture import new_toolbox_id, notes_server, spec, time_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def agent(tmp_path: Path, images: dict[str, str], docker_client: Any) -> Iterator[AgentProcess]:
    with running_agent(tmp_path / "state", docker_client, stop_signal=signal.SIGKILL) as a:
        yield a


def _put(a: AgentProcess, tb: str, body: str, wait: float | None = None) -> tuple[int, Any]:
    a.made.append(tb)
    path = f"/v1/toolboxes/{tb}" + (f"?wait={wait}" if wait else "")
    status, _, resp = a.request(
        "PUT", path, token=a.token, body=json.loads(body), timeout=(wait or 10) + 30
    )
    return status, resp


def _status(a: AgentProcess, tb: str) -> dict[str, Any]:
    status, body = a.get(f"/v1/toolboxes/{tb}", token=a.token)
    assert status == 200, body
    return dict(body)


def _events(a: AgentProcess, tb: str) -> list[dict[str, Any]]:
    status, body = a.get(f"/v1/events?toolbox={tb}&limit=1000", token=a.token)
    assert status == 200
    return list(body["items"])


def _restart(a: AgentProcess) -> None:
    a.stop(signal.SIGKILL)
    a.start()
    wait_until(lambda: a.get("/v1/ready")[0] == 200, 90, "ready after restart")


def _containers(docker_client: Any, tb: str) -> list[Any]:
    return list(docker_client.containers.list(all=True, filters={"label": f"{LABEL_TOOLBOX}={tb}"}))


def _assert_consistent(a: AgentProcess, docker_client: Any, tb: str, servers: int) -> int:
    status = _status(a, tb)
    assert status["phase"] == "healthy", status
    revisions = {s["revision"] for s in status["servers"]}
    assert len(revisions) == 1, status
    containers = _containers(docker_client, tb)
    assert len(containers) == servers, [c.name for c in containers]
    assert {c.labels["dtma.revision"] for c in containers} == {str(revisions.pop())}
    assert all(c.status == "running" for c in containers)
    assert {c.id for c in containers} == {s["container_id"] for s in status["servers"]}
    return int(containers[0].labels["dtma.revision"])


def test_killed_once_stable_adopts_the_same_containers_with_zero_restarts(
    agent: AgentProcess, docker_client: Any
) -> None:
    tb = new_toolbox_id()
    status, body = _put(agent, tb, spec(time_server("time"), notes_server("notes")), wait=60)
    assert status == 200, body
    assert body["operation"]["state"] == "succeeded", body
    before = {s["name"]: s["container_id"] for s in _status(agent, tb)["servers"]}
    started = {c.id: c.attrs["State"]["StartedAt"] for c in _containers(docker_client, tb)}

    _restart(agent)
    wait_until(
        lambda: all(s["health"] == "healthy" for s in _status(agent, tb)["servers"]),
        30,
        "adopted servers probed healthy",
    )
    after = _status(agent, tb)
    assert {s["name"]: s["container_id"] for s in after["servers"]} == before
    assert all(s["restarts"] == 0 for s in after["servers"])
    assert after["phase"] == "healthy"
    for c in _containers(docker_client, tb):
        assert c.attrs["State"]["StartedAt"] == started[c.id]  # never restarted
        assert c.attrs["RestartCount"] == 0
    adopted = [e for e in _events(agent, tb) if e["kind"] == "container_adopted"]
    assert {e["server"] for e in adopted} == {"time", "notes"}


def test_killed_mid_rollout_of_a_good_revision_keeps_it_once_healthy(
    agent: AgentProcess, docker_client: Any
) -> None:
    tb = new_toolbox_id()
    assert _put(agent, tb, spec(time_server("time"), notes_server("notes")), wait=60)[0] == 200
    # A min_healthy_time long enough to keep the gate open while the agent is killed (that
    # comes within a poll of both servers' start), and which recovery's own gate waits out
    # again: 30 s cost 30 s more here for nothing.
    two = spec(
        time_server("time", env={"TZ": "UTC"}),
        notes_server("notes"),
        min_healthy="12s",
        deadline="60s",
    )
    assert _put(agent, tb, two)[0] == 202
    wait_until(
        lambda: (
            sum(e["kind"] == "server_started" and e["revision"] == 2 for e in _events(agent, tb))
            == 2
        ),
        30,
        "revision 2 started",
    )
    _restart(agent)
    wait_until(lambda: _status(agent, tb)["phase"] == "healthy", 90, "healthy after recovery")
    assert _assert_consistent(agent, docker_client, tb, 2) == 2
    kinds = [e["kind"] for e in _events(agent, tb)]
    assert "recovery_kept_new_revision" in kinds


def test_killed_mid_rollout_of_a_bad_revision_returns_to_the_stable_one(
    agent: AgentProcess, docker_client: Any
) -> None:
    tb = new_toolbox_id()
    assert _put(agent, tb, spec(time_server("time"), notes_server("notes")), wait=60)[0] == 200
    old_ids = {c.id for c in _containers(docker_client, tb)}
    bad = spec(time_server("time"), notes_server("notes", "hang_initialize"), deadline="8s")
    assert _put(agent, tb, bad)[0] == 202
    wait_until(
        lambda: any(
            e["kind"] == "server_started" and e["revision"] == 2 for e in _events(agent, tb)
        ),
        30,
        "revision 2 started",
    )
    _restart(agent)
    wait_until(
        lambda: not any(c.labels["dtma.revision"] == "2" for c in _containers(docker_client, tb)),
        60,
        "revision 2 removed",
    )
    wait_until(lambda: _status(agent, tb)["phase"] == "healthy", 60, "healthy")
    assert _assert_consistent(agent, docker_client, tb, 2) == 1
    assert {c.id for c in _containers(docker_client, tb)} == old_ids
    kinds = [e["kind"] for e in _events(agent, tb)]
    assert "recovery_reverted" in kinds
    ops = [e for e in _events(agent, tb) if e["kind"] == "operation_finished"]
    assert ops[-1]["reason"] == "rolled_back"
    assert "agent restart" in ops[-1]["message"]


def test_restart_recreates_a_vanished_server_and_removes_strays(
    agent: AgentProcess, docker_client: Any, images: dict[str, str]
) -> None:
    tb = new_toolbox_id()
    assert _put(agent, tb, spec(time_server("time"), notes_server("notes")), wait=60)[0] == 200
    agent.stop(signal.SIGKILL)
    by_server = {c.labels["dtma.server"]: c for c in _containers(docker_client, tb)}
    by_server["notes"].remove(force=True)  # lost while the agent was down
    stray = docker_client.containers.run(
        images["mcp-time"],
        detach=True,
        stdin_open=True,
        labels={"dtma.toolbox": tb, "dtma.server": "time", "dtma.revision": "9"},
    )
    agent.start()
    wait_until(lambda: _status(agent, tb)["phase"] == "healthy", 60, "healthy")
    assert _assert_consistent(agent, docker_client, tb, 2) == 1
    servers = {s["name"]: s for s in _status(agent, tb)["servers"]}
    assert servers["time"]["container_id"] == by_server["time"].id
    assert servers["time"]["restarts"] == 0
    assert servers["notes"]["restarts"] == 1
    assert stray.id not in {c.id for c in _containers(docker_client, tb)}
    events = _events(agent, tb)
    assert any(
        e["kind"] == "server_restarted" and e["reason"] == "recovered" and e["server"] == "notes"
        for e in events
    )
    assert any(
        e["kind"] == "container_removed" and e["reason"] == "not_wanted" and e["revision"] == 9
        for e in events
    )
