"""Bad revisions are rolled back: the old revision keeps serving (start_first) or is restarted
(stop_first); the events name the failing server and the reason; nothing of the bad revision
is left behind."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dtma.adapters.mcp_probe import probe_http
from dtma.domain import gate
from tests.engine_fixture import (
    NOTES_TOOLS,
    EngineHarness,
    new_toolbox_id,
    notes_server,
    spec,
    time_server,
)

pytestmark = pytest.mark.integration

GOOD = (time_server("time"), notes_server("notes"))

# name -> (bad server replacing "notes" or "time", expected failing server, expected reason)
BAD: dict[str, tuple[dict[str, Any], str, str]] = {
    "exit_at_start": (notes_server("notes", "exit_at_start"), "notes", gate.CONTAINER_EXITED),
    "hang_initialize": (notes_server("notes", "hang_initialize"), "notes", gate.DEADLINE_EXCEEDED),
    "missing_tool": (
        time_server(
            "time",
            health={
                "expect_tools": ["get_current_time", "no_such"],
                "interval": "1s",
                "timeout": "3s",
            },
        ),
        "time",
        gate.PROBE_FAILED,
    ),
    "missing_image": (
        {**time_server("time"), "image": "dtma-examples/does-not-exist:1"},
        "time",
        gate.START_FAILED,
    ),
}


def bad_revision(kind: str, order: str) -> str:
    bad, _, _ = BAD[kind]
    servers = [bad if s["name"] == bad["name"] else s for s in GOOD]
    return spec(*servers, order=order, deadline="8s")


async def _serving_watch(url: str, stop: asyncio.Event) -> list[bool]:
    """Probe the old notes server every 200 ms until told to stop: it must answer every time."""
    results = []
    while not stop.is_set():
        results.append((await probe_http(url, timeout=3, expect_tools=NOTES_TOOLS)).healthy)
        await asyncio.sleep(0.2)
    return results


@pytest.mark.parametrize("kind", list(BAD))
async def test_start_first_rolls_back_without_touching_the_old_revision(
    harness: EngineHarness, kind: str
) -> None:
    tb = new_toolbox_id()
    assert (await harness.apply_and_wait(tb, spec(*GOOD))).state == "succeeded"
    before = {s["name"]: s for s in (await harness.agent.status(tb))["servers"]}
    old_ids = {s["container_id"] for s in before.values()}

    stop = asyncio.Event()
    watch = asyncio.create_task(_serving_watch(before["notes"]["endpoint"], stop))
    op = await harness.apply_and_wait(tb, bad_revision(kind, "start_first"))
    stop.set()
    answers = await watch

    assert op.state == "rolled_back", op
    _, server, reason = BAD[kind]
    assert op.error
    assert op.error.startswith(f"{server}: {reason}")
    assert answers, "the old revision was never probed during the rollout"
    assert all(answers), f"the old revision stopped answering: {answers}"

    status = await harness.agent.status(tb)
    assert status["phase"] == "healthy"
    assert status["stable_revision"] == 1
    assert {s["container_id"] for s in status["servers"]} == old_ids
    assert all(s["revision"] == 1 and s["health"] == "healthy" for s in status["servers"])
    left = await harness.containers(tb)
    assert {c.id for c in left} == old_ids, "a container of the failed revision was left"
    assert all(c.running for c in left)

    failed = [e for e in await harness.events(tb) if e.kind == "rollout_failed"]
    assert len(failed) == 1
    assert (failed[0].server, failed[0].reason, failed[0].revision) == (server, reason, 2)


@pytest.mark.parametrize("kind", ["exit_at_start", "missing_tool"])
async def test_stop_first_restarts_the_old_revision(harness: EngineHarness, kind: str) -> None:
    tb = new_toolbox_id()
    assert (await harness.apply_and_wait(tb, spec(*GOOD, order="stop_first"))).state == "succeeded"
    old_ids = {s["container_id"] for s in (await harness.agent.status(tb))["servers"]}

    op = await harness.apply_and_wait(tb, bad_revision(kind, "stop_first"))
    assert op.state == "rolled_back", op

    status = await harness.agent.status(tb)
    assert status["phase"] == "healthy"
    servers = status["servers"]
    assert all(s["revision"] == 1 and s["health"] == "healthy" for s in servers)
    assert {s["container_id"] for s in servers} == old_ids  # restarted, not recreated
    left = await harness.containers(tb)
    assert {c.id for c in left} == old_ids
    assert all(c.running for c in left)
    notes = next(s for s in servers if s["name"] == "notes")
    assert (await probe_http(notes["endpoint"], timeout=5, expect_tools=NOTES_TOOLS)).healthy

    kinds = [(e.kind, e.server, e.reason) for e in await harness.events(tb)]
    _, server, reason = BAD[kind]
    assert ("rollout_failed", server, reason) in kinds
    assert ("server_stopped", "notes", "stop_first") in kinds
    assert ("rollback_passed", None, gate.GATE_PASSED) in kinds


@pytest.mark.parametrize("kind", ["hang_initialize", "missing_image"])
async def test_stop_first_slow_failures_also_restore_the_old_revision(
    harness: EngineHarness, kind: str
) -> None:
    tb = new_toolbox_id()
    assert (await harness.apply_and_wait(tb, spec(*GOOD, order="stop_first"))).state == "succeeded"
    op = await harness.apply_and_wait(tb, bad_revision(kind, "stop_first"))
    assert op.state == "rolled_back", op
    status = await harness.agent.status(tb)
    assert status["phase"] == "healthy"
    assert all(s["revision"] == 1 and s["health"] == "healthy" for s in status["servers"])
    assert {c.revision for c in await harness.containers(tb)} == {1}


async def test_a_bad_first_deploy_fails_and_leaves_nothing(harness: EngineHarness) -> None:
    tb = new_toolbox_id()
    op = await harness.apply_and_wait(tb, spec(notes_server("notes", "exit_at_start")))
    assert op.state == "failed"
    assert "exit code 1" in (op.error or "")
    assert "exit_at_start" in (op.error or "")
    assert (await harness.agent.status(tb))["phase"] == "failed"
    assert await harness.containers(tb) == []


async def test_explicit_rollback_to_the_previous_stable_revision(harness: EngineHarness) -> None:
    tb = new_toolbox_id()
    assert (await harness.apply_and_wait(tb, spec(time_server("time")))).state == "succeeded"
    two = spec(time_server("time", env={"TZ": "Europe/Paris"}))
    assert (await harness.apply_and_wait(tb, two)).state == "succeeded"
    op = await harness.wait(await harness.agent.rollback(tb))
    assert (op.state, op.revision) == ("succeeded", 1)
    status = await harness.agent.status(tb)
    assert [s["revision"] for s in status["servers"]] == [1]
    assert {c.revision for c in await harness.containers(tb)} == {1}
    revisions = {r.number: r.stable for r in await harness.repo.revisions(tb)}
    assert revisions == {1: True, 2: True}
