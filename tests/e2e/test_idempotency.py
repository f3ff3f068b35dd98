"""Idempotency-Key on the POST routes, against a real agent and real containers."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.agent_process import AgentProcess
from tests.conftest import free_port, wait_until
from tests.engine_fixture import new_toolbox_id, remove_toolboxes, spec, time_server

pytestmark = pytest.mark.e2e


def test_a_repeated_key_replays_the_first_operation_even_after_a_restart(
    tmp_path: Path, images: dict[str, str], docker_client: Any
) -> None:
    agent = AgentProcess(tmp_path / "state", free_port()).start()
    tb = new_toolbox_id()
    try:
        status, _, body = agent.request(
            "PUT",
            f"/v1/toolboxes/{tb}?wait=60",
            token=agent.token,
            body=json.loads(spec(time_server("time"))),
            timeout=90,
        )
        assert status == 200, body
        key = {"Idempotency-Key": "restart-" + tb}
        first = agent.request(
            "POST",
            f"/v1/toolboxes/{tb}/restart",
            token=agent.token,
            body={"servers": ["time"]},
            headers=key,
        )
        second = agent.request(
            "POST",
            f"/v1/toolboxes/{tb}/restart",
            token=agent.token,
            body={"servers": ["time"]},
            headers=key,
        )
        assert first[0] == second[0] == 202
        assert second[2]["operation"] == first[2]["operation"]
        assert second[1].get("Idempotent-Replayed") == "true"

        other = agent.request(
            "POST",
            f"/v1/toolboxes/{tb}/restart",
            token=agent.token,
            body={"servers": []},
            headers=key,
        )
        assert other[0] == 422
        assert other[2]["error"]["details"][0]["loc"] == ["header", "Idempotency-Key"]

        agent.stop(signal.SIGTERM)
        agent.start()
        third = agent.request(
            "POST",
            f"/v1/toolboxes/{tb}/restart",
            token=agent.token,
            body={"servers": ["time"]},
            headers=key,
        )
        assert third[2]["operation"] == first[2]["operation"]
        fresh = agent.request(
            "POST",
            f"/v1/toolboxes/{tb}/restart",
            token=agent.token,
            body={"servers": ["time"]},
            headers={"Idempotency-Key": "new"},
        )
        assert fresh[0] == 202
        assert fresh[2]["operation"] != first[2]["operation"]
        fresh_op = f"/v1/operations/{fresh[2]['operation']}"
        wait_until(
            lambda: agent.get(fresh_op, agent.token)[1]["state"] != "running",
            60,
            "the fresh restart",
        )
        events = agent.get(f"/v1/events?toolbox={tb}", agent.token)[1]["items"]
        finished = {e["operation"] for e in events if e["kind"] == "operation_finished"}
        # The apply, one restart for the repeated key (three requests), and the fresh key's.
        assert finished == {body["operation"]["id"], first[2]["operation"], fresh[2]["operation"]}
    finally:
        agent.stop(signal.SIGTERM)
        remove_toolboxes(docker_client, [tb])
