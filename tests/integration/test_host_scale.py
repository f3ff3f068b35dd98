"""Host scale on the real engine: a burst of applies all become healthy, and all delete cleanly.

40 one-server toolboxes (the stdio mcp-time server) are applied at once: admission control
(engine/admission.py) lets the host start them at its own pace, and each server's deadline counts
from its own container start, so none fails for having waited. Then all are deleted at once and
nothing of this agent is left: no container, no network.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dtma.domain.containers import LABEL_AGENT
from tests.engine_fixture import (
    EngineHarness,
    engine_harness,
    new_toolbox_id,
    spec,
    time_server,
)

pytestmark = pytest.mark.integration

N = 40
MAX_STARTS = 3  # far below N: most servers wait for admission longer than their deadline


@pytest.fixture
async def harness(tmp_path: Path, images: dict[str, str]) -> AsyncIterator[EngineHarness]:
    async for h in engine_harness(tmp_path / "state", max_starts=MAX_STARTS):
        yield h


def _leftovers(harness: EngineHarness) -> tuple[list[str], list[str]]:
    label = {"label": f"{LABEL_AGENT}={harness.agent.agent_id}"}
    client = harness.docker_client
    return (
        [c.name for c in client.containers.list(all=True, filters=label)],
        [n.name for n in client.networks.list(filters=label)],
    )


@pytest.mark.timeout(300)
async def test_forty_toolboxes_applied_at_once_all_become_healthy_and_all_delete_cleanly(
    harness: EngineHarness,
) -> None:
    # A deadline (counted per server from its container start) shorter than the whole burst
    # takes with MAX_STARTS slots: waiting for a slot must not count against a server.
    body = spec(time_server("time"), min_healthy="1s", deadline="20s")
    t0 = time.monotonic()
    names = [new_toolbox_id() for _ in range(N)]
    applied = await asyncio.gather(*(harness.agent.apply(tb, body) for tb in names))
    ops = [a.operation for a in applied]
    assert all(ops)
    done = await asyncio.gather(*(harness.wait(op, timeout=240) for op in ops if op))
    failed = [(op.toolbox, op.error) for op in done if op.state != "succeeded"]
    assert not failed, f"{len(failed)} of {N} failed, e.g. {failed[:3]}"
    burst = time.monotonic() - t0
    statuses = {s["id"]: s for s in await harness.agent.statuses()}
    assert {statuses[tb]["phase"] for tb in names} == {"healthy"}

    # The watcher's brief listing (no inspect per running container) agrees with inspect.
    full = {c.id: c for c in await harness.runtime.list_managed()}
    brief = {c.id: c for c in await harness.runtime.list_managed(brief=True)}
    assert brief.keys() == full.keys()
    assert len(full) == N
    for cid, c in full.items():
        assert brief[cid] == dataclasses.replace(c, started_at=""), cid

    deleted = await asyncio.gather(*(harness.agent.delete(tb) for tb in names))
    ended = await asyncio.gather(*(harness.wait(op, timeout=120) for op in deleted))
    assert {op.state for op in ended} == {"succeeded"}
    containers, networks = await asyncio.to_thread(_leftovers, harness)
    assert (containers, networks) == ([], [])
    # Not an assertion on speed: the burst outlasting one deadline is what makes this a test of
    # per-server deadlines (else it proves only the bound). Reported for the record.
    print(f"{N} toolboxes healthy in {burst:.1f}s with {MAX_STARTS} admission slots")
