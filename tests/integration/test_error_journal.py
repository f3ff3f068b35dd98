"""The error journal on real failures: the same failure 50 times is one entry with count 50 and
the right category; a later passing rollout marks it resolved, saying what changed."""

from __future__ import annotations

import pytest

from tests.engine_fixture import EngineHarness, new_toolbox_id, spec, time_server

pytestmark = pytest.mark.integration

MISSING = "dtma-examples/does-not-exist:1"


async def test_fifty_identical_failures_are_one_entry_then_resolved(
    harness: EngineHarness,
) -> None:
    tb = new_toolbox_id()
    assert (await harness.apply_and_wait(tb, spec(time_server("time")))).state == "succeeded"
    bad = spec({**time_server("time"), "image": MISSING})
    for _ in range(50):  # each apply of the failed spec is a retry: a new revision
        op = await harness.apply_and_wait(tb, bad)
        assert op.state == "rolled_back"

    entries = await harness.repo.errors(toolbox=tb)
    rollout = [e for e in entries if e["kind"] == "rollout_failed"]
    assert len(rollout) == 1, entries
    (entry,) = rollout
    assert entry["count"] == 50
    assert entry["category"] == "image"
    assert entry["server"] == "time"
    assert entry["reason"] == "start_failed"
    assert MISSING in entry["sample"]
    assert entry["hint"]
    assert entry["resolved_at"] is None
    assert all(e["count"] == 50 for e in entries)  # server_start_failed is deduplicated too

    fixed = spec(time_server("time", env={"FIXED": "1"}))
    assert (await harness.apply_and_wait(tb, fixed)).state == "succeeded"
    for e in await harness.repo.errors(toolbox=tb):
        assert e["resolved_at"] is not None
        assert "revision 52 passed" in e["resolution"]
        assert "servers[time].image" in e["resolution"]
        assert "servers[time].env" in e["resolution"]
    assert await harness.repo.errors(toolbox=tb, resolved=False) == []
