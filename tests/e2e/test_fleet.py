"""`dtma fleet` against N real agent processes on the one Docker engine (issue 21, item 2).

N is DTMA_FLEET_AGENTS (default 6, so CI stays within a few minutes; the issue's 50 were run by
hand, figures in docs/fleet.md). The scenario: a first rollout and a no-op re-run, a good
revision (canary 1, batch 10) ends with every agent healthy, a bad revision halts after the
canary with the others untouched, a revision that passes the canary but fails the next batch
is rolled back fleet-wide with --rollback-on-failure, then status and rm everywhere.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_fleet import agent_name, running_fleet, write_fleet_file
from tests.agent_process import DTMA, AgentProcess
from tests.conftest import die_with_parent, free_port, wait_until
from tests.engine_fixture import new_toolbox_id, notes_server, spec, time_server

pytestmark = pytest.mark.e2e

COUNT = int(os.environ.get("DTMA_FLEET_AGENTS", "6"))


def zone(i: int) -> str:
    return "a" if i % 2 == 0 else "b"


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, images: dict[str, str], docker_client: Any
) -> Iterator[list[AgentProcess]]:
    started = time.monotonic()
    with running_fleet(tmp_path_factory.mktemp("fleet"), COUNT, docker_client) as agents:
        print(f"\n{COUNT} agents ready in {time.monotonic() - started:.1f}s")
        yield agents


@pytest.fixture
def fleet_file(fleet: list[AgentProcess], tmp_path: Path) -> Path:
    return write_fleet_file(
        tmp_path / "fleet.yaml",
        fleet,
        lambda i: {"zone": zone(i), "ring": "canary" if i == 0 else "main"},
    )


def dtma(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTMA_")}
    return subprocess.run([DTMA, *args], env=env, capture_output=True, text=True, timeout=timeout)


def timed(*args: str) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    run = dtma(*args)
    took = time.monotonic() - started
    print(f"`dtma {' '.join(args[:2])} ...` exit {run.returncode} in {took:.1f}s\n{run.stdout}")
    return run


def statuses(fleet_file: Path, toolbox: str) -> dict[str, Any]:
    run = dtma("fleet", "status", "-F", str(fleet_file), "--toolbox", toolbox, "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    return {row["agent"]: row["toolbox"] for row in json.loads(run.stdout)}


def revisions(agent: AgentProcess, toolbox: str) -> list[int]:
    status, body = agent.get(f"/v1/toolboxes/{toolbox}/revisions", agent.token)
    assert status == 200, body
    return [r["revision"] for r in body["items"]]


def fleet_spec(*servers: dict[str, Any], deadline: str = "90s", **kw: Any) -> str:
    """Egress on from the start: the clash revision below publishes a host port, which an
    internal network never does, and a toolbox's network cannot change in place. Long
    deadlines and probe timeouts: a batch starts many containers at once, and N agents share
    a small machine; the stock 3 s probe timeout can starve a stdio server's first initialize."""
    slow = [{**s, "health": {**s["health"], "timeout": "20s"}} for s in servers]
    return spec(*slow, network={"egress": True}, deadline=deadline, **kw)


def listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), 1):
        return True


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.timeout(1800)
def test_gated_rollout_across_the_fleet(
    fleet: list[AgentProcess], fleet_file: Path, tmp_path: Path, docker_client: Any
) -> None:
    tb = new_toolbox_id()
    for a in fleet:
        a.made.append(tb)
    F = str(fleet_file)
    v1 = write(tmp_path / "v1.yaml", fleet_spec(time_server("time")))
    v2 = write(tmp_path / "v2.yaml", fleet_spec(time_server("time", env={"TZ": "UTC"})))
    bad_tools = time_server("time", env={"TZ": "UTC"})
    bad_tools["health"] = {**bad_tools["health"], "expect_tools": ["no_such_tool"]}
    bad = write(tmp_path / "bad.yaml", fleet_spec(bad_tools, deadline="10s"))

    # A first rollout: the toolbox is new everywhere.
    run = timed("fleet", "apply", "-F", F, "-f", v1, "--id", tb, "--canary", "1", "--batch", "10")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"canary 1/1: {agent_name(0)}" in run.stdout
    assert f"{agent_name(0)}: new -> revision 1 healthy" in run.stdout
    assert f"done: {COUNT} updated, 0 already at the spec" in run.stdout
    assert {(s["revision"], s["phase"]) for s in statuses(fleet_file, tb).values()} == {
        (1, "healthy")
    }

    # A re-run is a no-op: every agent answers "unchanged" and is skipped.
    run = dtma("fleet", "apply", "-F", F, "-f", v1, "--id", tb)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("already at revision 1, skipped") == COUNT
    assert f"done: 0 updated, {COUNT} already at the spec" in run.stdout
    run = dtma("fleet", "apply", "-F", F, "-f", v1, "--id", tb, "--json")  # JSON lines
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    agents = [ln for ln in lines if ln["kind"] == "agent"]
    assert {(a["outcome"], a["after"]) for a in agents} == {("unchanged", 1)}
    assert [a["agent"] for a in agents][:1] == [agent_name(0)]
    assert lines[-1]["kind"] == "done"

    # The good revision: canary 1, batch 10; every agent ends healthy on revision 2.
    run = timed("fleet", "apply", "-F", F, "-f", v2, "--id", tb, "--canary", "1", "--batch", "10")
    assert run.returncode == 0, run.stdout + run.stderr
    batches = -(-(COUNT - 1) // 10)
    assert f"batch {batches}/{batches}" in run.stdout
    assert run.stdout.count("revision 1 -> revision 2 healthy") == COUNT
    lines = run.stdout.splitlines()  # progress is printed in order: the canary ends first
    canary_done = next(i for i, ln in enumerate(lines) if f"{agent_name(0)}: revision 1" in ln)
    assert canary_done < next(i for i, ln in enumerate(lines) if ln.startswith("batch 1/"))
    assert {(s["revision"], s["phase"]) for s in statuses(fleet_file, tb).values()} == {
        (2, "healthy")
    }

    # The bad revision halts after the canary, whose own gate rolled it back.
    run = timed(
        "fleet", "apply", "-F", F, "-f", bad, "--id", tb, "--rollback-on-failure", "--batch", "10"
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{agent_name(0)}: gate rolled_back" in run.stdout
    assert f"halted: {agent_name(0)} gate_failed; {COUNT - 1} agents untouched" in run.stdout
    assert "rollback: no agent was updated; nothing to undo" in run.stdout
    assert "batch 1/" not in run.stdout
    assert revisions(fleet[0], tb) == [1, 2, 3]
    assert all(revisions(a, tb) == [1, 2] for a in fleet[1:])  # untouched: no revision 3
    after = statuses(fleet_file, tb)
    assert {(s["revision"], s["phase"]) for s in after.values()} == {(2, "healthy")}

    # A revision that passes on the canary and fails on the next batch: every agent publishes
    # the same fixed host port, which only the first can get. --rollback-on-failure returns
    # the canary to the revision it served before; the batch's agents reverted themselves.
    port = free_port()
    clash = write(
        tmp_path / "clash.yaml",
        fleet_spec(
            time_server("time", env={"TZ": "UTC"}),
            notes_server("notes", publish=f"127.0.0.1:{port}"),
            order="stop_first",
        ),
    )
    run = timed(
        "fleet", "apply", "-F", F, "-f", clash, "--id", tb,
        "--canary", "1", "--batch", "2", "--rollback-on-failure",
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{agent_name(0)}: revision 2 -> revision 4 healthy" in run.stdout
    assert re.search(rf"{agent_name(1)}: gate rolled_back: .*", run.stdout), run.stdout
    assert re.search(rf"{agent_name(2)}: gate rolled_back: .*", run.stdout), run.stdout
    assert f"{COUNT - 3} agents untouched" in run.stdout
    assert f"rollback {agent_name(0)}: back on revision 2" in run.stdout
    after = statuses(fleet_file, tb)
    assert {(s["revision"], s["phase"]) for s in after.values()} == {(2, "healthy")}
    assert all(revisions(a, tb) == [1, 2] for a in fleet[3:])

    # Status: one row per agent, the toolbox's revision and phase.
    run = dtma("fleet", "status", "-F", F, "--toolbox", tb)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[0].split() == [
        "AGENT", "URL", "REACHABLE", "TOOLBOXES", "PHASES", "REVISION", "PHASE", "ERROR",
    ]  # fmt: skip
    rows = [ln.split() for ln in run.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == [agent_name(i) for i in range(COUNT)]
    assert {tuple(r[2:]) for r in rows} == {("yes", "1", "healthy=1", "2", "healthy", "-")}

    # rm by label, then everywhere: the half already done answers "absent".
    run = dtma("fleet", "rm", "-F", F, "--id", tb, "--selector", "zone=b")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("removed") == COUNT // 2
    run = dtma("fleet", "rm", "-F", F, "--id", tb, "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    outcome = {r["agent"]: r["outcome"] for r in json.loads(run.stdout)}
    assert outcome == {
        agent_name(i): "removed" if zone(i) == "a" else "absent" for i in range(COUNT)
    }
    assert set(statuses(fleet_file, tb).values()) == {None}
    left = docker_client.containers.list(all=True, filters={"label": f"dtma.toolbox={tb}"})
    assert left == []


def test_status_shows_unreachable_refused_and_strange_agents_as_rows(
    fleet: list[AgentProcess], tmp_path: Path
) -> None:
    # Something that is not a dtma agent: a plain static HTTP server whose /v1/toolboxes is HTML.
    site = tmp_path / "site"
    (site / "v1").mkdir(parents=True)
    (site / "v1" / "toolboxes").write_text("<html>not an agent</html>")
    other_port = free_port()
    other = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(other_port), "--bind", "127.0.0.1"],
        cwd=site,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent,
    )
    try:
        wait_until(lambda: listening(other_port), 30, "the static HTTP server")
        good = fleet[:2]
        path = write_fleet_file(tmp_path / "fleet.yaml", good, token_files=False)
        path.write_text(
            path.read_text()
            + f"- name: gone\n  url: http://127.0.0.1:{free_port()}\n  token: x\n"
            + f"- name: wrong-token\n  url: {good[0].base_url}\n  token: not-the-token\n"
            + f"- name: not-dtma\n  url: http://127.0.0.1:{other_port}\n  token: x\n"
        )
        run = dtma("fleet", "status", "-F", str(path), "--timeout", "5")
    finally:
        other.terminate()
        other.wait(10)
    assert run.returncode == 3, run.stdout + run.stderr
    rows = {ln.split()[0]: ln for ln in run.stdout.splitlines()[1:]}
    assert set(rows) == {agent_name(0), agent_name(1), "gone", "wrong-token", "not-dtma"}
    assert " no " in rows["gone"]
    assert "cannot reach the agent" in rows["gone"]
    assert " yes " in rows["wrong-token"]
    assert "401" in rows["wrong-token"]
    assert "not a dtma agent's answer" in rows["not-dtma"]
    assert "not-the-token" not in run.stdout + run.stderr
    assert " yes " in rows[agent_name(0)]
    assert rows[agent_name(0)].rstrip().endswith("-")  # no error
    run = dtma("fleet", "status", "-F", str(path), "--selector", "zone=nowhere")
    assert run.returncode == 2
    assert "no agent in" in run.stderr


def test_a_spec_the_canary_refuses_halts_with_its_reason(
    fleet: list[AgentProcess], fleet_file: Path, tmp_path: Path
) -> None:
    bad = write(tmp_path / "bad.yaml", "servers: [{name: Bad, image: x}]")
    run = dtma("fleet", "apply", "-F", str(fleet_file), "-f", bad, "--id", new_toolbox_id())
    assert run.returncode == 1, run.stdout + run.stderr
    assert "422 spec_invalid" in run.stdout or "422" in run.stdout, run.stdout
    assert "servers.0.name" in run.stdout
    assert f"{COUNT - 1} agents untouched" in run.stdout


def test_bad_fleet_files_and_arguments_exit_2(tmp_path: Path) -> None:
    path = write(
        tmp_path / "fleet.yaml",
        "agents:\n  - {name: a, url: 'ftp://h', token: t}\n  - {name: b, url: 'http://h'}\n",
    )
    run = dtma("fleet", "status", "-F", path)
    assert run.returncode == 2
    assert "invalid fleet file" in run.stderr
    assert "agents.0.url: must be an http:// or https:// URL" in run.stderr
    assert "agents.1: give exactly one of token and token_file" in run.stderr
    missing = dtma("fleet", "status", "-F", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert "cannot read fleet file" in missing.stderr
    assert dtma("fleet", "apply", "-F", path, "-f", path, "--batch", "0").returncode == 2
    assert dtma("fleet", "status", "-F", path, "--selector", "nokey").returncode == 2


def test_the_documented_commands(fleet: list[AgentProcess], tmp_path: Path) -> None:
    """docs/fleet.md's "Try it" block, word for word, in a directory holding fleet.yaml and
    time.yaml (three of the agents, to keep it short)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "fleet.md").read_text()
    block = text.split("### Try it", 1)[1].split("```console\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    assert [c[:3] for c in commands] == [
        ["dtma", "fleet", "apply"],
        ["dtma", "fleet", "status"],
        ["dtma", "fleet", "apply"],
        ["dtma", "fleet", "rm"],
    ]
    write_fleet_file(tmp_path / "fleet.yaml", fleet[:3])
    (tmp_path / "time.yaml").write_text(fleet_spec(time_server("time")))
    for a in fleet[:3]:
        a.made.append("time")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTMA_")}
    outputs = []
    for argv in commands:
        run = subprocess.run(
            [DTMA, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert run.returncode == 0, f"{argv}: {run.stdout}{run.stderr}"
        outputs.append(run.stdout)
    assert "done: 3 updated" in outputs[0]
    assert outputs[1].count("healthy") >= 3
    assert "done: 0 updated, 3 already at the spec" in outputs[2]
    assert outputs[3].count("removed") == 3


@pytest.mark.timeout(600)  # four fleet runs over four agents: minutes on a loaded host
def test_rolling_back_a_new_toolbox_removes_it_and_a_rerun_resumes(
    fleet: list[AgentProcess], tmp_path: Path
) -> None:
    """Where the halted run created the toolbox, --rollback-on-failure removes it; a run cut
    short (here: a selector took half) is finished by re-running it for all."""
    four = fleet[:4]
    path = str(write_fleet_file(tmp_path / "fleet.yaml", four, lambda i: {"zone": zone(i)}))
    tb = new_toolbox_id()
    for a in four:
        a.made.append(tb)
    clash = write(
        tmp_path / "clash.yaml",
        fleet_spec(notes_server("notes", publish=f"127.0.0.1:{free_port()}"), order="stop_first"),
    )
    run = timed(
        "fleet", "apply", "-F", path, "-f", clash, "--id", tb,
        "--canary", "1", "--batch", "2", "--rollback-on-failure",
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{agent_name(0)}: new -> revision 1 healthy" in run.stdout
    assert f"{agent_name(1)}: gate failed: " in run.stdout  # nothing served before: failed
    assert "1 agents untouched" in run.stdout
    assert f"rollback {agent_name(0)}: removed {tb} (new on this agent)" in run.stdout
    assert four[0].get(f"/v1/toolboxes/{tb}", four[0].token)[0] == 404
    assert four[3].get(f"/v1/toolboxes/{tb}", four[3].token)[0] == 404  # untouched

    good = write(tmp_path / "good.yaml", fleet_spec(time_server("time")))
    run = dtma("fleet", "apply", "-F", path, "-f", good, "--id", tb, "--selector", "zone=a")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "done: 2 updated, 0 already at the spec" in run.stdout
    run = dtma("fleet", "apply", "-F", path, "-f", good, "--id", tb)
    assert run.returncode == 0, run.stdout + run.stderr
    for i in (0, 2):  # agent-02's failed revision 1 was retried as revision 2 above
        assert re.search(rf"{agent_name(i)}: already at revision \d, skipped", run.stdout)
    for i in (1, 3):
        assert re.search(rf"{agent_name(i)}: (new|revision \d) -> revision \d healthy", run.stdout)
    assert "done: 2 updated, 2 already at the spec" in run.stdout
    run = dtma("fleet", "rm", "-F", path, "--id", tb)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("removed") == 4
