"""Supervised background tasks: a failure is logged, counted, makes readiness fail while the task
is down, and the task is restarted with a backoff; cancellation ends it for good."""

from __future__ import annotations

import asyncio

import pytest

from dtma.engine.engine_watch import EngineWatch
from dtma.engine.readiness import ReadinessMonitor
from dtma.engine.supervisor import Supervisor, backoff_delay
from dtma.observability.metrics import METRICS
from tests.fakes import FakeEnginePing


def _failures(kind: str) -> float:
    return METRICS.task_failures.labels(kind)._value.get()


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(n, 1.0, 5.0) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


async def test_a_failing_loop_is_reported_down_then_restarted() -> None:
    sup = Supervisor(base=0.2, cap=0.2)
    runs = 0
    running = asyncio.Event()

    async def body() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise OSError("disk full")
        running.set()
        await asyncio.Event().wait()  # runs until cancelled

    before = _failures("test-loop")
    task = asyncio.create_task(sup.run("relist", "test-loop", body))
    await asyncio.sleep(0.05)
    assert sup.down() == ["task: relist failed (OSError); restarting in 0.2s"]
    assert _failures("test-loop") == before + 1
    await asyncio.wait_for(running.wait(), 2)
    assert sup.down() == []
    assert runs == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sup.down() == []


async def test_a_loop_that_returns_is_restarted_unless_it_may_end() -> None:
    sup = Supervisor(base=0.01, cap=0.01)
    runs = 0

    async def body() -> None:
        nonlocal runs
        runs += 1

    task = asyncio.create_task(sup.run("events", "test-return", body))
    await asyncio.sleep(0.2)
    assert runs >= 2  # "ended unexpectedly", so started again
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    runs = 0
    await sup.run("server t/a", "test-return", body, forever=False)
    assert runs == 1
    assert sup.down() == []


async def test_readiness_fails_while_a_task_is_down() -> None:
    watch = EngineWatch(FakeEnginePing(up=True))
    monitor = ReadinessMonitor(watch)
    monitor.mark_state_loaded()
    await watch.check()
    down: list[str] = []
    monitor.add_check(lambda: down)
    assert monitor.check() == []
    down.append("task: relist failed (OSError); restarting in 1s")
    assert monitor.check() == ["task: relist failed (OSError); restarting in 1s"]
