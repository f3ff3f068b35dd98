"""Against a real agent process: the restart budget survives kill -9, a toolbox that cannot be
recreated does not keep the agent from starting, and the last write wins (issue 9, items 7-9)."""

from __future__ import annotations

import json
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtma.domain.containers import LABEL_TOOLBOX
from tests.agent_process import AgentProcess, running_agent
from tests.conftest import wait_until
from tests.engine_fixture import MCP_NOTES, new_toolbox_id, notes_server, spec, time_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def agent(tmp_path: Path, images: dict[str, str], docker_client: Any) -> Iterator[AgentProcess]:
    with running_agent(tmp_path / "state", docker_client, stop_signal=signal.SIGKILL) as a:
        yield a


def _call(a: AgentProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, _, resp = a.request(method, path, token=a.token, body=body, timeout=120)
    return status, resp


def _put(a: AgentProcess, tb: str, body: str, wait: float | None = None) -> tuple[int, Any]:
    a.made.append(tb)
    path = f"/v1/toolboxes/{tb}" + (f"?wait={wait}" if wait else "")
    return _call(a, "PUT", path, json.loads(body))


def _status(a: AgentProcess, tb: str) -> dict[str, Any]:
    status, body = _call(a, "GET", f"/v1/toolboxes/{tb}")
    assert status == 200, body
    return dict(body)


def _server(a: AgentProcess, tb: str, name: str) -> dict[str, Any]:
    return next(s for s in _status(a, tb)["servers"] if s["name"] == name)


def _events(a: AgentProcess, tb: str) -> list[dict[str, Any]]:
    status, body = _call(a, "GET", f"/v1/events?toolbox={tb}&limit=1000")
    assert status == 200
    return list(body["items"])


def _operation(a: AgentProcess, op: str, timeout: float = 90) -> dict[str, Any]:
    found = wait_until(
        lambda: (r := _call(a, "GET", f"/v1/operations/{op}")[1])["state"] != "running" and r,
        timeout,
        f"operation {op} to end",
    )
    return dict(found)


def _containers(docker_client: Any, tb: str) -> list[Any]:
    return list(docker_client.containers.list(all=True, filters={"label": f"{LABEL_TOOLBOX}={tb}"}))


def _kill_server(a: AgentProcess, docker_client: Any, tb: str, name: str) -> str:
    container_id = _server(a, tb, name)["container_id"]
    docker_client.containers.get(container_id).kill()
    return str(container_id)


RESTART = {"attempts": 2, "interval": "10m", "delay": "0.2s", "max_delay": "1s", "mode": "fail"}


def test_restart_counts_and_the_budget_survive_kill_9(
    agent: AgentProcess, docker_client: Any
) -> None:
    tb = new_toolbox_id()
    status, body = _put(agent, tb, spec(notes_server("notes"), restart=RESTART), wait=60)
    assert status == 200, body
    for count in (1, 2):
        old = _kill_server(agent, docker_client, tb, "notes")
        wait_until(
            lambda old=old, count=count: (
                (s := _server(agent, tb, "notes"))["restarts"] == count
                and s["container_id"] != old
                and s["health"] == "healthy"
            ),
            60,
            f"restart {count}",
        )
    before = _server(agent, tb, "notes")

    agent.stop(signal.SIGKILL)
    agent.start()
    after = _server(agent, tb, "notes")
    assert after["restarts"] == 2, after
    assert after["container_id"] == before["container_id"]  # adopted, not restarted

    # Two restarts inside the 10 m window were spent before the agent died: a third crash now
    # exhausts the budget instead of finding a fresh one.
    _kill_server(agent, docker_client, tb, "notes")
    failed = wait_until(
        lambda: (s := _server(agent, tb, "notes"))["state"] == "failed" and s, 30, "given up"
    )
    assert failed["restarts"] == 2
    assert _status(agent, tb)["phase"] == "degraded"
    gave_up = [e for e in _events(agent, tb) if e["kind"] == "server_failed"]
    assert [e["reason"] for e in gave_up] == ["restarts_exhausted"]

    # And the spent budget survives another kill -9: the crashed server stays failed.
    agent.stop(signal.SIGKILL)
    agent.start()
    again = _server(agent, tb, "notes")
    assert (again["state"], again["restarts"]) == ("failed", 2), again


def test_a_toolbox_whose_image_is_gone_does_not_keep_the_agent_from_starting(
    agent: AgentProcess, docker_client: Any
) -> None:
    repository = f"dtma-test-{secrets.token_hex(4)}/notes"
    image = f"{repository}:gone"
    docker_client.images.get(MCP_NOTES).tag(repository, "gone")
    try:
        broken, fine = new_toolbox_id(), new_toolbox_id()
        assert _put(agent, broken, spec(notes_server("notes", image=image)), wait=60)[0] == 200
        assert _put(agent, fine, spec(time_server("time")), wait=60)[0] == 200
        fine_before = _status(agent, fine)["servers"][0]["container_id"]

        agent.stop(signal.SIGKILL)
        for c in _containers(docker_client, broken):
            c.kill()  # crashed while the agent was down: it must be recreated from its image
        docker_client.images.remove(image)  # only our own tag; mcp-notes keeps its own
        agent.start(wait=90)  # ready, although one toolbox cannot be recreated

        assert _status(agent, broken)["phase"] == "failed"
        why = [e for e in _events(agent, broken) if e["kind"] == "recovery_failed"]
        assert len(why) == 1, why
        assert image in why[0]["message"]
        status, errors = _call(agent, "GET", "/v1/errors")
        assert status == 200
        entry = [e for e in errors["items"] if e["toolbox"] == broken]
        assert [e["category"] for e in entry] == ["image"], entry

        # Ready does not wait for an adopted server's first answer (`deploying` until then).
        fine_now = wait_until(
            lambda: (s := _status(agent, fine))["phase"] != "deploying" and s,
            30,
            "the fine toolbox's adopted server to answer",
        )
        assert fine_now["phase"] == "healthy", fine_now
        assert fine_now["servers"][0]["container_id"] == fine_before

        status, body = _call(agent, "DELETE", f"/v1/toolboxes/{broken}?wait=60")
        assert status == 200, body
        assert body["operation"]["state"] == "succeeded", body
        assert _call(agent, "GET", f"/v1/toolboxes/{broken}")[0] == 404
        assert _containers(docker_client, broken) == []
    finally:
        if docker_client.images.list(name=repository):
            docker_client.images.remove(image)


def test_the_last_write_wins_even_when_it_is_the_serving_spec(
    agent: AgentProcess, docker_client: Any
) -> None:
    tb = new_toolbox_id()
    serving = spec(time_server("time"))
    assert _put(agent, tb, serving, wait=60)[0] == 200
    slow = spec(time_server("time", env={"TZ": "UTC"}), min_healthy="30s", deadline="60s")
    status, body = _put(agent, tb, slow)
    assert status == 202, body
    b_op = body["operation"]
    wait_until(
        lambda: any(
            e["kind"] == "server_started" and e["revision"] == 2 for e in _events(agent, tb)
        ),
        30,
        "revision 2 in its gate",
    )
    status, body = _put(agent, tb, serving)
    assert status == 202, body  # not "unchanged": it must replace revision 2
    assert body["revision"] == 3
    assert _operation(agent, body["operation"])["state"] == "succeeded"
    superseded = _operation(agent, b_op)
    assert superseded["state"] == "failed"
    assert "revision 3 was applied" in superseded["error"]
    final = _status(agent, tb)
    assert (final["revision"], final["stable_revision"], final["phase"]) == (3, 3, "healthy")
    assert {c.labels["dtma.revision"] for c in _containers(docker_client, tb)} == {"3"}
    # Applying it once more is a no-op now that it serves.
    status, body = _put(agent, tb, serving)
    assert (status, body.get("unchanged")) == (200, True)


def test_a_put_behind_a_delete_is_refused_never_lost(
    agent: AgentProcess, docker_client: Any
) -> None:
    tb = new_toolbox_id()
    body = spec(time_server("time"))
    assert _put(agent, tb, body, wait=60)[0] == 200
    status, deleting = _call(agent, "DELETE", f"/v1/toolboxes/{tb}")
    assert status == 202, deleting
    status, refused = _put(agent, tb, body)
    assert status == 409, refused
    assert "being deleted" in refused["error"]["message"]
    assert _operation(agent, deleting["operation"])["state"] == "succeeded"
    assert _call(agent, "GET", f"/v1/toolboxes/{tb}")[0] == 404

    # Once the delete has ended, the same PUT makes a fresh toolbox.
    status, fresh = _put(agent, tb, body, wait=60)
    assert status == 200, fresh
    assert (fresh["revision"], fresh["phase"]) == (1, "healthy")
    status, gone = _call(agent, "DELETE", f"/v1/toolboxes/{tb}?wait=60")
    assert status == 200, gone
    assert gone["operation"]["kind"] == "delete"
    assert gone["operation"]["state"] == "succeeded"
    assert _containers(docker_client, tb) == []


def _write_ahead(a: AgentProcess, tb: str, restarts: int) -> None:
    """Leave the state DB as a server runner does when the agent dies mid-restart: the restart
    already counted, `pending` set (the agent is stopped; sqlite3 from the test's own Python)."""
    import sqlite3

    with sqlite3.connect(a.state_dir / "state.db") as db:
        db.execute(
            "INSERT OR REPLACE INTO server_restarts (toolbox, server, revision, restarts, "
            "attempts, gave_up, pending, updated_at) VALUES (?, 'time', 1, ?, ?, 0, 1, ?)",
            (tb, restarts, json.dumps([time.time()]), time.time()),
        )


def _pending(a: AgentProcess, tb: str) -> list[int]:
    import sqlite3

    with sqlite3.connect(a.state_dir / "state.db") as db:
        rows = db.execute("SELECT pending FROM server_restarts WHERE toolbox = ?", (tb,))
        return [int(r[0]) for r in rows]


@pytest.mark.parametrize("replacement", ["running", "never created"])
def test_a_restart_in_flight_at_kill_9_is_counted_once(
    agent: AgentProcess, docker_client: Any, replacement: str
) -> None:
    tb = new_toolbox_id()
    assert _put(agent, tb, spec(time_server("time"), restart=RESTART), wait=60)[0] == 200
    agent.stop(signal.SIGKILL)
    _write_ahead(agent, tb, 1)
    if replacement == "never created":  # killed between removing the old one and the create
        for c in _containers(docker_client, tb):
            c.remove(force=True)
    agent.start()
    server = wait_until(
        lambda: (s := _server(agent, tb, "time"))["health"] == "healthy" and s, 60, "healthy"
    )
    assert server["restarts"] == 1, server  # neither lost (0) nor counted twice (2)
    assert _pending(agent, tb) == [0]
