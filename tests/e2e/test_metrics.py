"""/metrics on a real agent: counters and gauges move as a healthy rollout, a rollback and a
crash with its restart happen; random paths do not grow the number of series."""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.agent_process import AgentProcess, running_agent
from tests.conftest import wait_until
from tests.engine_fixture import new_toolbox_id, notes_server, spec, time_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def agent(tmp_path: Any, images: dict[str, str], docker_client: Any) -> Iterator[AgentProcess]:
    with running_agent(tmp_path / "state", docker_client) as a:
        yield a


def scrape(agent: AgentProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{agent.base_url}/metrics", timeout=10) as resp:  # no token
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(m: dict[Any, float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def put_wait(agent: AgentProcess, tb: str, body: str) -> dict[str, Any]:
    agent.made.append(tb)
    status, _, resp = agent.request(
        "PUT", f"/v1/toolboxes/{tb}?wait=90", token=agent.token, body=json.loads(body), timeout=120
    )
    assert status == 200, resp
    return dict(resp)


def test_metrics_follow_a_rollout_a_rollback_and_a_crash(
    agent: AgentProcess, docker_client: Any
) -> None:
    tb = new_toolbox_id()
    before = scrape(agent)
    assert put_wait(agent, tb, spec(time_server("time")))["operation"]["state"] == "succeeded"
    after = scrape(agent)
    assert (
        value(after, "dtma_rollouts_total", result="succeeded")
        == value(before, "dtma_rollouts_total", result="succeeded") + 1
    )
    assert value(after, "dtma_toolbox_phase", toolbox=tb, phase="healthy") == 1
    assert value(after, "dtma_toolbox_phase", toolbox=tb, phase="degraded") == 0
    assert value(after, "dtma_server_healthy", toolbox=tb, server="time") == 1
    assert value(after, "dtma_rollout_duration_seconds_count") >= 1
    assert value(after, "dtma_probe_latency_seconds_count", transport="stdio") > 0

    before = after
    bad = spec(time_server("time"), notes_server("notes", "exit_at_start"))
    assert put_wait(agent, tb, bad)["operation"]["state"] == "rolled_back"
    after = scrape(agent)
    assert value(after, "dtma_rollbacks_total", trigger="auto") == (
        value(before, "dtma_rollbacks_total", trigger="auto") + 1
    )
    assert value(after, "dtma_rollbacks_total", trigger="manual") == value(
        before, "dtma_rollbacks_total", trigger="manual"
    )
    assert (
        value(after, "dtma_rollouts_total", result="rolled_back")
        == value(before, "dtma_rollouts_total", result="rolled_back") + 1
    )
    assert value(after, "dtma_errors_total", category="runtime") > value(
        before, "dtma_errors_total", category="runtime"
    )
    assert value(after, "dtma_gate_duration_seconds_count", result="failed") >= 1

    before = after
    (container,) = docker_client.containers.list(filters={"label": f"dtma.toolbox={tb}"})
    container.kill()
    wait_until(
        lambda: (
            value(scrape(agent), "dtma_container_restarts_total", toolbox=tb, server="time") == 1
        ),
        60,  # generous: a loaded 2-core machine starts a container slowly; returns when true
        "the restart counted",
    )
    wait_until(
        lambda: value(scrape(agent), "dtma_server_healthy", toolbox=tb, server="time") == 1,
        60,
        "healthy again",
    )
    after = scrape(agent)
    assert (
        value(after, "dtma_container_restarts_total", toolbox=tb, server="time")
        == value(before, "dtma_container_restarts_total", toolbox=tb, server="time") + 1
    )


def _random_requests(agent: AgentProcess, n: int) -> None:
    for i in range(n):
        path = f"/{secrets.token_hex(6)}/{i}/x?y={i}"
        agent.request("GET" if i % 2 else "POST", path, token=agent.token if i % 3 else None)


def test_random_paths_do_not_add_series(agent: AgentProcess) -> None:
    _random_requests(agent, 12)  # every method/status combination these requests can reach
    scrape(agent)  # a scrape counts itself, from the next scrape on
    first = scrape(agent)
    _random_requests(agent, 200)
    after = scrape(agent)
    assert set(after) == set(first), set(after) ^ set(first)  # 200 new paths, not one new series
    routes = {
        dict(labels).get("route") for (name, labels) in after if name == "dtma_api_requests_total"
    }
    assert routes <= {"unmatched", "/metrics", "/v1/health", "/v1/ready"}
    unmatched = sum(
        v
        for (name, labels), v in after.items()
        if name == "dtma_api_requests_total" and dict(labels)["route"] == "unmatched"
    )
    assert unmatched >= 212
