"""The MCP conformance suite (`@modelcontextprotocol/conformance`, server mode, run with the
host's node) against a toolbox's MCP endpoint on a real agent, with a stdio and an HTTP server
behind it. The suite's results must match the table in docs/gateway.md ("MCP conformance"):
every scenario it runs is listed there, and exactly the ones marked `passes` pass. The failing
ones are also handed to the suite as its own baseline, so it exits 0 only on a match too.

The suite is installed once with npm into .venv/conformance (like `bao`, a test tool that lives
with the venv; `make clean` removes it). Skipped, saying why, without node/npm or the registry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_process import AgentProcess, running_agent
from tests.engine_fixture import new_toolbox_id, notes_server, spec, time_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_DOC = ROOT / "docs/gateway.md"
BEARER = Path(__file__).resolve().parent / "conformance/bearer.cjs"
# 0.1.14 and later need node >= 22 (fs.globSync); the host's node is 20.
PACKAGE = "@modelcontextprotocol/conformance@0.1.13"
INSTALL_DIR = ROOT / ".venv/conformance"
ROW = re.compile(r"^\| `([a-z0-9-]+)` \| (passes|fails) \|", re.M)


def documented() -> dict[str, bool]:
    """scenario -> passes, from the "MCP conformance" table of docs/gateway.md."""
    text = GATEWAY_DOC.read_text()
    section = text.split("## MCP conformance", 1)[1].split("\n## ", 1)[0]
    return {name: verdict == "passes" for name, verdict in ROW.findall(section)}


@pytest.fixture(scope="module")
def suite() -> Path:
    """The suite's CLI, installed on first use."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` is not installed; the conformance suite runs on node")
    cli = INSTALL_DIR / "node_modules/.bin/conformance"
    marker = INSTALL_DIR / "installed"
    if not (cli.exists() and marker.exists() and marker.read_text() == PACKAGE):
        INSTALL_DIR.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(INSTALL_DIR), PACKAGE],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"npm could not install {PACKAGE}: {done.stderr.strip()[-500:]}")
        marker.write_text(PACKAGE)
    return cli


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory, images: dict[str, str], docker_client: Any
) -> Iterator[AgentProcess]:
    with running_agent(tmp_path_factory.mktemp("conf") / "state", docker_client) as a:
        yield a


def scenario_results(out: Path) -> dict[str, bool]:
    """scenario -> passed (no check FAILURE), from the suite's checks.json files."""
    results: dict[str, bool] = {}
    for checks in out.glob("server-*/checks.json"):
        name = re.sub(r"^server-|-\d{4}-\d\d-\d\dT.*$", "", checks.parent.name)
        statuses = {c["status"] for c in json.loads(checks.read_text())}
        results[name] = "FAILURE" not in statuses
    return results


def test_the_suite_passes_what_the_docs_claim(
    suite: Path, agent: AgentProcess, tmp_path: Path
) -> None:
    claimed = documented()
    assert claimed, "docs/gateway.md has no MCP conformance table"
    tb = new_toolbox_id()
    agent.made.append(tb)
    body = spec(time_server("time"), notes_server("notes"), deadline="90s").encode()
    status, _, final = agent.request(
        "PUT", f"/v1/toolboxes/{tb}?wait=120", token=agent.token, raw=body, timeout=130
    )
    assert status in (200, 202), final
    assert final["phase"] == "healthy", final

    baseline = tmp_path / "expected-failures.yml"
    failing = sorted(name for name, passes in claimed.items() if not passes)
    baseline.write_text("server:\n" + "".join(f"  - {name}\n" for name in failing))
    out = tmp_path / "results"
    env = {
        **os.environ,
        "NODE_OPTIONS": f"--require {BEARER}",
        "DTMA_CONFORMANCE_DIR": str(INSTALL_DIR),
        "DTMA_CONFORMANCE_ORIGIN": agent.base_url,
        "DTMA_CONFORMANCE_TOKEN": agent.token,
    }
    run = subprocess.run(
        [
            str(suite),
            "server",
            "--url",
            f"{agent.base_url}/v1/toolboxes/{tb}/mcp",
            "--expected-failures",
            str(baseline),
            "-o",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    got = scenario_results(out)
    summary = run.stdout[run.stdout.find("=== SUMMARY") :]
    assert got, run.stdout[-3000:] + run.stderr[-2000:]
    assert set(got) == set(claimed), (sorted(set(got) ^ set(claimed)), summary)
    assert {n for n, ok in got.items() if ok} == {n for n, ok in claimed.items() if ok}, summary
    assert run.returncode == 0, summary + run.stderr[-2000:]
