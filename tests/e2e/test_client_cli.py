"""The Python client and the `dtma` CLI against a real agent, on real containers: apply, wait,
rollback, delete; exit codes; concurrent applies all accounted for."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtma.client import ApiError, DtmaClient, Unreachable
from tests.agent_process import DTMA, AgentProcess, running_agent
from tests.conftest import free_port
from tests.engine_fixture import new_toolbox_id, notes_server, spec, time_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, images: dict[str, str], docker_client: Any
) -> Iterator[AgentProcess]:
    with running_agent(tmp_path_factory.mktemp("cli") / "state", docker_client) as a:
        yield a


def cli(agent: AgentProcess, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DTMA_URL": agent.base_url, "DTMA_API_TOKEN": agent.token}
    return subprocess.run([DTMA, *args], env=env, capture_output=True, text=True, timeout=timeout)


async def test_client_apply_wait_rollback_delete(agent: AgentProcess) -> None:
    tb = new_toolbox_id()
    agent.made.append(tb)
    async with DtmaClient(agent.base_url, agent.token) as client:
        assert (await client.health()).status == "ok"
        done = await client.apply(tb, spec(time_server("time")), wait=60)
        assert getattr(done, "phase", None) == "healthy"
        same = await client.apply(tb, spec(time_server("time")))
        assert getattr(same, "unchanged", None) is True
        accepted = await client.apply(tb, spec(time_server("time", env={"TZ": "UTC"})))
        op = await client.wait_operation(accepted.operation, 60)  # type: ignore[union-attr]
        assert (op.state, op.revision) == ("succeeded", 2)
        ref = await client.rollback(tb)
        assert (await client.wait_operation(ref.operation, 60)).state == "succeeded"
        status = await client.get(tb)
        assert [s.revision for s in status.servers] == [1]
        assert "get_current_time" in (await client.tools(tb)).servers[0].tools
        assert [r.revision for r in (await client.revisions(tb)).items] == [1, 2]
        ref = await client.delete(tb)
        assert (await client.wait_operation(ref.operation, 60)).state == "succeeded"
        with pytest.raises(ApiError) as missing:
            await client.get(tb)
        assert (missing.value.status, missing.value.code) == (404, "not_found")
        with pytest.raises(ApiError) as invalid:
            await client.apply(tb, "servers: [{name: Bad, image: x}]")
        assert invalid.value.status == 422
        assert invalid.value.details[0]["loc"] == ["servers", 0, "name"]


async def test_client_reports_an_unreachable_agent() -> None:
    async with DtmaClient(f"http://127.0.0.1:{free_port()}", "t", retries=2, timeout=2) as c:
        with pytest.raises(Unreachable):
            await c.health()


def test_cli_apply_wait_shows_progress_and_exit_codes(agent: AgentProcess, tmp_path: Path) -> None:
    tb = new_toolbox_id()
    agent.made.append(tb)
    good = tmp_path / f"{tb}.yaml"
    good.write_text(spec(time_server("time"), notes_server("notes")))
    run = cli(agent, "apply", "-f", str(good), "--wait", "90")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "time: server_started" in run.stdout
    assert "notes: server_started" in run.stdout
    assert f"{tb}: apply succeeded" in run.stdout
    assert "phase healthy" in run.stdout

    again = cli(agent, "apply", "-f", str(good))
    assert again.returncode == 0
    assert "unchanged (revision 1)" in again.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(spec(time_server("time"), notes_server("notes", "exit_at_start")))
    run = cli(agent, "apply", "-f", str(bad), "--id", tb, "--wait", "90")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "notes: rollout_failed (container_exited)" in run.stdout
    assert "apply rolled_back" in run.stdout

    ls = cli(agent, "ls", "--json")
    assert ls.returncode == 0
    assert any(t["id"] == tb and t["phase"] == "healthy" for t in json.loads(ls.stdout))
    get = cli(agent, "get", tb)
    assert "SERVER" in get.stdout
    assert "healthy" in get.stdout
    tools = cli(agent, "tools", tb)
    assert "get_current_time" in tools.stdout
    assert "add_note" in tools.stdout
    logs = cli(agent, "logs", tb, "notes", "--tail", "5")
    assert logs.returncode == 0
    assert "serving on" in logs.stdout
    events = cli(agent, "events", "--toolbox", tb)
    assert "rollout_failed" in events.stdout
    errors = cli(agent, "errors", "--toolbox", tb, "--json")
    assert errors.returncode == 0, errors.stderr
    crashed = [e for e in json.loads(errors.stdout)["items"] if e["kind"] == "rollout_failed"]
    assert crashed[0]["reason"] == "container_exited"
    assert crashed[0]["category"] == "runtime"
    assert "CATEGORY" in cli(agent, "errors").stdout

    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("servers: [{name: Bad, image: x}]")
    run = cli(agent, "apply", "-f", str(invalid), "--id", tb)
    assert run.returncode == 2
    assert "servers.0.name" in run.stderr
    assert cli(agent, "get", "no-such-toolbox").returncode == 2
    assert cli(agent, "restart", tb, "--server", "time", "--wait", "60").returncode == 0
    nothing = cli(agent, "rollback", tb)  # revision 2 was rolled back: no other stable one
    assert nothing.returncode == 2
    assert "no stable revision to roll back to" in nothing.stderr
    back = cli(agent, "rollback", tb, "--to", "1", "--wait", "60")
    assert back.returncode == 0, back.stdout + back.stderr
    assert f"{tb}: rollback succeeded" in back.stdout
    run = cli(agent, "rm", tb, "--wait", "60")
    assert run.returncode == 0, run.stdout + run.stderr
    assert cli(agent, "get", tb).returncode == 2

    env = {**os.environ, "DTMA_URL": f"http://127.0.0.1:{free_port()}", "DTMA_API_TOKEN": "x"}
    down = subprocess.run([DTMA, "ls"], env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 3
    assert "cannot reach the agent" in down.stderr
    usage = subprocess.run([DTMA, "apply"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2


async def test_concurrent_applies_are_all_accounted_for(agent: AgentProcess) -> None:
    tb = new_toolbox_id()
    agent.made.append(tb)
    bodies = [spec(time_server("time", env={"N": str(i)})) for i in range(5)]
    async with DtmaClient(agent.base_url, agent.token) as client:
        results = await asyncio.gather(*(client.apply(tb, b) for b in bodies))
        ops = [r.operation for r in results]  # type: ignore[union-attr]
        assert len(set(ops)) == 5
        finals = [await client.wait_operation(op, 180) for op in ops]
        assert all(f.state in ("succeeded", "rolled_back", "failed") for f in finals)
        assert sorted(f.revision or 0 for f in finals) == [1, 2, 3, 4, 5]
        status = await client.get(tb)
        revisions = {r.revision: r.spec for r in (await client.revisions(tb)).items}
        serving = {s.revision for s in status.servers}
        assert len(serving) == 1
        (rev,) = serving
        env = revisions[rev]["servers"][0]["env"]
        assert env in [{"N": str(i)} for i in range(5)]
        assert status.phase == "healthy"
