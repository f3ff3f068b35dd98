"""Heartbeats from real agent processes to a test controller (docs/controller.md).

A fleet of agents (heartbeat_fleet.py: DTMA_TEST_FLEET_AGENTS, default 5), each with its own
state dir, port, agent id and one small stdio toolbox (agent 0 has two, one with a Vault
secret), sends heartbeats every DTMA_TEST_HEARTBEAT_INTERVAL seconds to an aiohttp controller
in this process. The tests run in file order over the one fleet: first heartbeats, a pushed
phase change, deltas, resync, hostile answers, the controller down and back, agents killed,
a clean stop.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.agent_process import DTMA, AgentProcess
from tests.conftest import free_port, wait_until
from tests.e2e.controller_support import Received
from tests.e2e.heartbeat_fleet import (
    AGENTS,
    DOWN_S,
    INTERVAL,
    PUSH_WITHIN_S,
    Fleet,
    cpu_seconds,
    fleet_fixture,  # noqa: F401 - the module-scoped fixture `fleet`
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def _toolbox_in(r: Received, toolbox: str) -> dict[str, Any] | None:
    return next((t for t in r.body["toolboxes"] if t["id"] == toolbox), None)


def test_every_agent_reports_a_full_heartbeat_within_two_intervals(fleet: Fleet) -> None:
    for i, agent_id in enumerate(fleet.ids):
        got = fleet.controller.received(agent_id)
        assert got, f"{agent_id}: no heartbeat"
        first = got[0]
        assert first.body["full"] is True
        assert first.body["seq"] == 1
        assert first.at <= fleet.ready_at[i] + 2 * INTERVAL
        assert first.authorization == f"Bearer {fleet.controller.token}"
        agent = first.body["agent"]
        assert agent["id"] == agent_id
        assert agent["url"] == fleet.agents[i].base_url
        assert agent["labels"] == {"fleet": "hb", "index": str(i)}
        assert first.body["host"]["cpus"] == os.cpu_count()
        assert first.body["host"]["memory_available_bytes"] > 0
        seqs = [r.body["seq"] for r in got]
        assert seqs == sorted(set(seqs))
    # Once deployed, the controller's view (the last full heartbeat plus later deltas) is right.
    wait_until(lambda: all(_view(fleet, i) == _truth(fleet, i) for i in fleet.live()), 3 * INTERVAL,
               "the controller's view matches every agent")  # fmt: skip


def _view(fleet: Fleet, i: int) -> dict[str, str]:
    """Toolbox -> phase as the controller knows it from agent i's heartbeats."""
    view: dict[str, str] = {}
    for r in fleet.controller.received(fleet.ids[i]):
        if r.mode != "ok":
            continue
        if r.body["full"]:
            view = {}
        for t in r.body["toolboxes"]:
            view[t["id"]] = t["phase"]
    return {k: v for k, v in view.items() if v != "deleted"}


def _truth(fleet: Fleet, i: int) -> dict[str, str]:
    return {t["id"]: t["phase"] for t in fleet.toolbox_status(i)}


def test_secrets_never_appear_in_a_heartbeat(fleet: Fleet) -> None:
    a0 = fleet.agents[0]
    assert [t["phase"] for t in fleet.toolbox_status(0)] == ["healthy", "healthy"]
    forbidden = [fleet.secret, fleet.controller.token, *(a.token for a in fleet.agents)]
    raw = b"".join(r.raw for r in fleet.controller.received())
    assert raw
    for value in forbidden:
        assert value.encode() not in raw
    assert fleet.secret not in a0.logs()


def _op(a: AgentProcess, toolbox: str, kind: str) -> None:
    status, _, body = a.request("POST", f"/v1/toolboxes/{toolbox}/{kind}", token=a.token)
    assert status == 202, body
    op = body["operation"]
    wait_until(
        lambda: a.get(f"/v1/operations/{op}", token=a.token)[1]["state"] != "running",
        60,
        f"{kind} of {toolbox}",
    )


def _phase_event(a: AgentProcess, toolbox: str, to: str, since: int) -> dict[str, Any]:
    _, events = a.get(f"/v1/events?since={since}&toolbox={toolbox}", token=a.token)
    return next(
        e
        for e in events["items"]
        if e["kind"] == "toolbox_phase_changed" and e["message"].endswith(f"-> {to}")
    )


def _cursor(a: AgentProcess) -> int:
    _, events = a.get("/v1/events?since=0&limit=1000", token=a.token)
    return max((e["cursor"] for e in events["items"]), default=0)


def test_a_phase_change_reaches_the_controller_within_a_second_in_a_delta(fleet: Fleet) -> None:
    a0, agent_id = fleet.agents[0], fleet.ids[0]
    for kind, to in (("stop", "stopped"), ("start", "healthy")):
        since = _cursor(a0)
        _op(a0, "hb-00-b", kind)
        event = wait_until(
            lambda since=since, to=to: _try_event(a0, since, to), 30, f"phase -> {to}"
        )
        pushed = wait_until(
            lambda event=event, to=to: next(
                (
                    r
                    for r in fleet.controller.received(agent_id, since=event["ts"] - 0.05)
                    if (t := _toolbox_in(r, "hb-00-b")) and t["phase"] == to
                ),
                None,
            ),
            5,
            f"a heartbeat with hb-00-b {to}",
        )
        assert pushed.at - event["ts"] <= PUSH_WITHIN_S, (pushed.at, event)
        fleet.figures[f"push_{to}_s"] = round(pushed.at - event["ts"], 3)
        if not pushed.body["full"]:  # a delta carries the changed toolbox only
            assert [t["id"] for t in pushed.body["toolboxes"]] == ["hb-00-b"]


def _try_event(a: AgentProcess, since: int, to: str) -> dict[str, Any] | None:
    try:
        return _phase_event(a, "hb-00-b", to, since)
    except StopIteration:
        return None


def test_deltas_carry_only_changed_toolboxes(fleet: Fleet) -> None:
    since = time.time()
    time.sleep(3 * INTERVAL)
    for agent_id in fleet.ids[1:]:
        got = fleet.controller.received(agent_id, since=since)
        assert len(got) >= 2, agent_id
        for r in got:
            assert r.body["full"] or r.body["toolboxes"] == [], r.body
            assert r.body["counts"] == {"toolboxes": 1, "containers": 1, "healthy_toolboxes": 1}


def test_resync_yields_a_full_heartbeat(fleet: Fleet) -> None:
    agent_id = fleet.ids[1 % AGENTS]
    since = time.time()
    fleet.controller.resync.add(agent_id)
    wait_until(lambda: agent_id not in fleet.controller.resync, 3 * INTERVAL, "resync answered")
    wait_until(
        lambda: len(fleet.controller.received(agent_id, since=since)) >= 2,
        3 * INTERVAL,
        "the heartbeat after the resync",
    )
    answered, after = fleet.controller.received(agent_id, since=since)[:2]
    assert after.body["full"] is True
    assert [t["id"] for t in after.body["toolboxes"]] == fleet.toolboxes[agent_id]
    assert after.body["seq"] == answered.body["seq"] + 1


@pytest.mark.parametrize(
    ("mode", "outcome", "per_interval"),
    [
        ("401", "unauthorized", 1),
        ("garbage", "bad_answer", 1),
        ("redirect", "redirect", 1),
        ("5xx", "server_error", 4),  # retried with backoff within the interval
        ("hang", "timeout", 1),  # each attempt ends after min(interval, 10 s)
    ],
)
def test_hostile_answers_are_bounded_and_logged_and_the_agents_keep_serving(
    fleet: Fleet, mode: str, outcome: str, per_interval: int
) -> None:
    before = {i: [t["servers"] for t in fleet.toolbox_status(i)] for i in fleet.live()}
    fleet.controller.mode = mode
    since = time.time()
    window = 2.5 * INTERVAL
    try:
        deadline = time.monotonic() + window
        while time.monotonic() < deadline:  # the API answers at once all along
            t0 = time.monotonic()
            assert fleet.agents[0].get("/v1/health")[0] == 200
            assert time.monotonic() - t0 < 1.0
            time.sleep(0.5)
    finally:
        fleet.controller.mode = "ok"
    bound = per_interval * (window / INTERVAL + 1) + 1
    for i in fleet.live():
        hostile = [
            r for r in fleet.controller.received(fleet.ids[i], since=since) if r.mode == mode
        ]
        assert 1 <= len(hostile) <= bound, (fleet.ids[i], mode, len(hostile))
    a0 = fleet.agents[0]
    controller = a0.get("/v1/agent", token=a0.token)[1]["controller"]
    assert controller["url"] == fleet.controller.url
    assert controller["last_error"].startswith(outcome)
    logs = a0.logs()
    assert outcome in logs
    assert fleet.controller.token not in logs
    assert fleet.controller.followed == 0
    _, _, metrics = a0.request("GET", "/metrics")
    assert f'dtma_controller_heartbeats_total{{outcome="{outcome}"}}' in metrics
    assert "dtma_controller_heartbeat_age_seconds" in metrics
    # Back to normal: every agent is acknowledged again, and no toolbox was touched.
    wait_until(
        lambda: all(
            fleet.agents[i].get("/v1/agent", token=fleet.agents[i].token)[1]["controller"][
                "consecutive_failures"
            ]
            == 0
            for i in fleet.live()
        ),
        3 * INTERVAL + 10,
        "every agent acknowledged again",
    )
    after = {i: [t["servers"] for t in fleet.toolbox_status(i)] for i in fleet.live()}
    assert _steady(after) == _steady(before)
    assert all(s["health"] != "unhealthy" for tbs in after.values() for tb in tbs for s in tb)


def _steady(servers: dict[int, list[list[dict[str, Any]]]]) -> Any:
    """The same containers, never restarted (health may go from unknown to healthy: a server
    started just before is probed every 10 s)."""
    return {
        i: [[(s["container_id"], s["restarts"]) for s in tb] for tb in tbs]
        for i, tbs in servers.items()
    }


def test_the_controller_down_then_back_the_agents_catch_up_undisturbed(fleet: Fleet) -> None:
    before = {i: fleet.toolbox_status(i) for i in fleet.live()}
    fleet.controller.go_down()
    try:
        _op(fleet.agents[0], "hb-00-b", "stop")  # a change the controller misses while down
        time.sleep(DOWN_S)
    finally:
        back = time.time()
        fleet.controller.come_back()
    wait_until(
        lambda: all(fleet.controller.received(fleet.ids[i], since=back) for i in fleet.live()),
        2 * INTERVAL,
        "a heartbeat from every agent after the controller came back",
    )
    caught_up = max(fleet.controller.received(fleet.ids[i], since=back)[0].at for i in fleet.live())
    fleet.figures["catch_up_s"] = round(caught_up - back, 2)
    first0 = fleet.controller.received(fleet.ids[0], since=back)[0]
    assert _toolbox_in(first0, "hb-00-b")["phase"] == "stopped"  # type: ignore[index]
    for i in fleet.live():
        assert _view(fleet, i) == _truth(fleet, i)
    after = {i: fleet.toolbox_status(i) for i in fleet.live()}
    for i in fleet.live():
        for b, a in zip(before[i], after[i], strict=True):
            if a["id"] == "hb-00-b":
                continue
            assert a["phase"] == "healthy"
            assert [(s["container_id"], s["restarts"]) for s in a["servers"]] == [
                (s["container_id"], s["restarts"]) for s in b["servers"]
            ]
    _op(fleet.agents[0], "hb-00-b", "start")


def test_killed_agents_stop_their_heartbeats_and_the_others_keep_their_interval(
    fleet: Fleet,
) -> None:
    doomed = list(range(AGENTS - max(1, AGENTS // 10), AGENTS))
    for i in doomed:
        fleet.agents[i].stop(signal.SIGKILL)
        fleet.killed.add(i)
    killed_at = time.time()
    time.sleep(4 * INTERVAL)
    for i in doomed:
        assert fleet.controller.received(fleet.ids[i], since=killed_at) == []
    gaps = []
    for i in fleet.live():
        times = [r.at for r in fleet.controller.received(fleet.ids[i], since=killed_at)]
        assert len(times) >= 3, fleet.ids[i]
        gaps += [b - a for a, b in itertools.pairwise(times)]
    fleet.figures["max_gap_s"] = round(max(gaps), 2)
    assert max(gaps) <= INTERVAL + 0.75


def test_the_agents_stop_cleanly_and_their_heartbeats_end(fleet: Fleet) -> None:
    cpu = [cpu_seconds(fleet.agents[i].proc.pid) for i in fleet.live()]  # type: ignore[union-attr]
    fleet.figures["agent_cpu_s_mean"] = round(sum(cpu) / len(cpu), 2)
    fleet.figures["agent_cpu_s_total"] = round(sum(cpu), 1)
    for i in fleet.live():
        assert fleet.agents[i].stop(signal.SIGTERM) == 0
        assert '"agent_stopped"' in fleet.agents[i].logs()
        fleet.killed.add(i)  # stopped: the teardown has nothing left to stop
    stopped = time.time()
    time.sleep(INTERVAL + 0.5)
    assert fleet.controller.received(since=stopped) == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DTMA_CONTROLLER_URL": "controller.example:8080"}, "DTMA_CONTROLLER_URL"),
        ({"DTMA_HEARTBEAT_INTERVAL": "-15s"}, "DTMA_HEARTBEAT_INTERVAL"),
        ({"DTMA_AGENT_LABELS": "zone=a,rack"}, "DTMA_AGENT_LABELS"),
    ],
)
def test_bad_heartbeat_settings_stop_the_agent_with_exit_2(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [DTMA, "serve"],
        env={
            **os.environ,
            "DTMA_STATE_DIR": str(tmp_path),
            "DTMA_LISTEN": f"127.0.0.1:{free_port()}",
            "DTMA_CONTROLLER_TOKEN": "t" * 32,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "t" * 32 not in proc.stderr
