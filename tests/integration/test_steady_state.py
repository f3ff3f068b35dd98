"""After the gate: crashes are seen through the event stream and restarted with backoff until
the attempts run out; then the server is `failed` and the toolbox `degraded`."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.engine_fixture import (
    EngineHarness,
    new_toolbox_id,
    notes_server,
    spec,
    time_server,
)

pytestmark = pytest.mark.integration


async def _until(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await pred()
        if value:
            return value
        await asyncio.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


async def test_crash_after_is_restarted_with_backoff_until_attempts_run_out(
    harness: EngineHarness,
) -> None:
    tb = new_toolbox_id()
    body = spec(
        time_server("time"),
        notes_server("notes", "crash_after:3"),
        min_healthy="1s",
        # Short steps (the spec's floor is 0.1 s): the doubling and the 0-25% jitter show as
        # well at 0.2 s as at 1 s, and the waits cost less.
        restart={"attempts": 2, "interval": "5m", "delay": "0.2s", "max_delay": "0.8s"},
    )
    op = await harness.apply_and_wait(tb, body)
    assert op.state == "succeeded", op

    async def failed() -> bool:
        status = await harness.agent.status(tb)
        notes = next(s for s in status["servers"] if s["name"] == "notes")
        return notes["state"] == "failed" and status["phase"] == "degraded"

    await _until(failed, 60, "notes failed and toolbox degraded")
    status = await harness.agent.status(tb)
    notes = next(s for s in status["servers"] if s["name"] == "notes")
    time_srv = next(s for s in status["servers"] if s["name"] == "time")
    assert notes["restarts"] == 2
    assert time_srv["state"] == "running"
    assert time_srv["restarts"] == 0

    events = [e for e in await harness.events(tb) if e.server == "notes"]
    steps = [
        e.kind
        for e in events
        if e.kind in ("server_crashed", "server_restarting", "server_restarted", "server_failed")
    ]
    assert steps == [
        "server_crashed",
        "server_restarting",
        "server_restarted",
        "server_crashed",
        "server_restarting",
        "server_restarted",
        "server_crashed",
        "server_failed",
    ]
    crashed = [e for e in events if e.kind == "server_crashed"]
    assert all(e.reason == "container_exited" and "exit code 3" in e.message for e in crashed)
    delays = [
        float(e.message.split(" in ")[1].rstrip("s"))
        for e in events
        if e.kind == "server_restarting"
    ]
    assert 0.2 <= delays[0] <= 0.25
    assert 0.4 <= delays[1] <= 0.5
    assert next(e for e in events if e.kind == "server_failed").reason == "restarts_exhausted"
    phases = [e.message for e in await harness.events(tb) if e.kind == "toolbox_phase_changed"]
    assert "healthy -> degraded" in phases


async def test_a_crash_is_noticed_within_about_a_second(harness: EngineHarness) -> None:
    tb = new_toolbox_id()
    body = spec(time_server("time"), restart={"attempts": 3, "delay": "1s"})
    assert (await harness.apply_and_wait(tb, body)).state == "succeeded"
    (container,) = await harness.containers(tb)
    t0 = time.monotonic()
    await asyncio.to_thread(harness.docker_client.api.kill, container.id)

    async def crashed() -> bool:
        return any(e.kind == "server_crashed" for e in await harness.events(tb))

    await _until(crashed, 10, "server_crashed")
    noticed = time.monotonic() - t0
    assert noticed < 3, f"crash noticed after {noticed:.1f}s"  # events, not the 10 s re-list

    async def back() -> bool:
        status = await harness.agent.status(tb)
        s = status["servers"][0]
        return s["restarts"] == 1 and s["health"] == "healthy" and status["phase"] == "healthy"

    await _until(back, 30, "restarted and healthy")
    (fresh,) = await harness.containers(tb)
    assert fresh.id != container.id
    assert fresh.running


async def test_an_unhealthy_server_is_restarted_past_the_threshold(harness: EngineHarness) -> None:
    """Plain Docker never restarts an unhealthy container; the agent does."""
    tb = new_toolbox_id()
    body = spec(
        notes_server(
            "notes",
            health={
                "expect_tools": ["add_note"],
                "interval": "1s",
                "timeout": "2s",
                "failure_threshold": 2,
            },
        )
    )
    assert (await harness.apply_and_wait(tb, body)).state == "succeeded"
    (container,) = await harness.containers(tb)
    await asyncio.to_thread(harness.docker_client.api.pause, container.id)  # alive, not answering

    async def restarted() -> bool:
        return any(e.kind == "server_restarted" for e in await harness.events(tb))

    await _until(restarted, 30, "server_restarted")
    unhealthy = [e for e in await harness.events(tb) if e.kind == "server_unhealthy"]
    assert unhealthy
    assert unhealthy[0].reason == "probe_failed"
    assert "2 consecutive probe failures" in unhealthy[0].message
    ids = {c.id for c in await harness.containers(tb)}
    assert container.id not in ids


async def test_a_hung_stdio_server_fails_its_steady_pings_and_is_restarted(
    harness: EngineHarness,
) -> None:
    """Steady state pings a stdio server beside its session; one that stops answering (paused:
    running, attached, silent) becomes unhealthy past the threshold and is replaced."""
    tb = new_toolbox_id()
    server = time_server("time")
    server["health"] = {**server["health"], "interval": "1s", "timeout": "1s"}
    server["health"]["failure_threshold"] = 2
    assert (await harness.apply_and_wait(tb, spec(server))).state == "succeeded"

    async def pinged() -> bool:  # healthy on steady pings, not only on the gate's tools/list
        s = (await harness.agent.status(tb))["servers"][0]
        return s["health"] == "healthy" and s["restarts"] == 0

    await _until(pinged, 10, "healthy in steady state")
    await asyncio.sleep(2.5)  # a few steady pings answered
    assert (await harness.agent.status(tb))["phase"] == "healthy"
    (container,) = await harness.containers(tb)
    await asyncio.to_thread(harness.docker_client.api.pause, container.id)

    async def restarted() -> bool:
        return any(e.kind == "server_restarted" for e in await harness.events(tb))

    await _until(restarted, 30, "server_restarted")
    unhealthy = [e for e in await harness.events(tb) if e.kind == "server_unhealthy"]
    assert unhealthy[0].reason == "probe_failed", unhealthy
    assert "2 consecutive probe failures" in unhealthy[0].message
    assert container.id not in {c.id for c in await harness.containers(tb)}
