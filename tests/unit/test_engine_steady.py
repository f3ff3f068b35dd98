"""Steady state after the gate (engine/server_runner.py) over the fakes on virtual time: the
health tracker's threshold restarts an unhealthy server; crashes are restarted until the
budget is spent."""

from __future__ import annotations

import asyncio

from dtma.domain import probe as reasons
from dtma.engine import event_kinds as ev
from tests.fakes import HEALTHY, unhealthy
from tests.unit.engine_harness import Engine, server, spec_json
from tests.virtual_time import eventually, run_virtual


def test_threshold_failures_after_stable_restart_the_server() -> None:
    e = Engine()

    async def main() -> None:
        agent = e.agent()
        await agent.start()
        body = spec_json(server("a", health={"interval": "1s", "failure_threshold": 2}))
        result = await agent.apply("tb", body)
        assert result.operation is not None
        assert (await agent.wait(result.operation, 60)).state == "succeeded"
        first = e.runtime.of("tb")[0].id
        # Healthy once, then the tool disappears: 2 failures in a row cross the threshold.
        e.prober.script(
            "a",
            HEALTHY,
            unhealthy(reasons.MISSING_TOOLS, "x"),
            unhealthy(reasons.MISSING_TOOLS, "x"),
            HEALTHY,
        )
        await eventually(lambda: first not in e.runtime.containers, within=30)
        marks = [x for x in e.store.event_rows if x.kind == ev.SERVER_UNHEALTHY]
        assert len(marks) == 1
        assert "2 consecutive probe failures" in marks[0].message
        await eventually(lambda: ev.SERVER_RESTARTED in e.store.kinds(), within=30)
        status = await agent.status("tb")
        assert [(s["restarts"], s["state"]) for s in status["servers"]] == [(1, "running")]

        async def healthy_again() -> bool:
            return bool((await agent.status("tb"))["servers"][0]["health"] == "healthy")

        await eventually(healthy_again)
        await agent.stop()

    run_virtual(main)


def test_crashes_are_restarted_until_the_budget_is_spent() -> None:
    e = Engine()

    async def main() -> None:
        agent = e.agent()
        await agent.start()
        body = spec_json(server("a"), restart={"attempts": 2, "interval": "10m", "delay": "1s"})
        result = await agent.apply("tb", body)
        assert result.operation is not None
        assert (await agent.wait(result.operation, 60)).state == "succeeded"

        async def settled() -> bool:
            state = (await agent.status("tb"))["servers"][0]["state"]
            return state == "failed" or any(c.running for c in e.runtime.of("tb"))

        for _ in range(3):
            current = e.runtime.of("tb")[0]
            e.runtime.exit(current.id, 1)
            await eventually(
                lambda: (
                    any(c.running for c in e.runtime.of("tb"))
                    or agent._runners["tb"].servers["a"].state == "failed"
                ),
                within=120,
            )
        status = await agent.status("tb")
        assert status["phase"] == "degraded"
        assert [(s["state"], s["restarts"]) for s in status["servers"]] == [("failed", 2)]
        assert e.store.kinds("tb").count(ev.SERVER_CRASHED) == 3
        assert ev.SERVER_FAILED in e.store.kinds("tb")
        await agent.stop()

    run_virtual(main)


def test_a_crash_restart_halted_by_an_asked_for_restart_is_counted_once() -> None:
    """The crash's restart is counted before its create (a write-ahead for kill -9); halted in
    that create by an operator's restart, it did not happen, and only the operator's counts."""
    e = Engine()

    async def main() -> None:
        agent = e.agent()
        await agent.start()
        body = spec_json(server("a"), restart={"attempts": 5, "interval": "10m", "delay": "1s"})
        result = await agent.apply("tb", body)
        assert result.operation is not None
        assert (await agent.wait(result.operation, 60)).state == "succeeded"
        e.runtime.create_hold = asyncio.Event()  # never set: the crash's create hangs
        e.runtime.exit(e.runtime.of("tb")[0].id, 137)
        await eventually(lambda: e.runtime.create_hold is None, within=30)
        op = await agent.server_operation("tb", "restart", ["a"])
        assert (await agent.wait(op, 60)).state == "succeeded"
        status = await agent.status("tb")
        assert [(s["restarts"], s["state"]) for s in status["servers"]] == [(1, "running")]
        assert e.live() == {"a": 1}
        await agent.stop()

    run_virtual(main)
