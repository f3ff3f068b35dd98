"""engine/call_guard.py: a call runs in its caller's task; a server's exit cuts it (an anyio
cancel scope) even when it swallows the cancel, and the cut never leaves a cancel behind or
hides someone else's."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from dtma.engine.call_guard import CallGuard


class Cut(Exception):
    pass


def cut_error() -> Exception:
    return Cut("the server exited during the call")


async def test_a_call_runs_in_its_callers_task_and_is_counted() -> None:
    guard = CallGuard("s")
    release = asyncio.Event()
    seen: list[asyncio.Task[object] | None] = []

    async def start() -> str:
        seen.append(asyncio.current_task())
        await release.wait()
        return "done"

    caller = asyncio.create_task(guard.run(start, cut_error))
    await asyncio.sleep(0)
    assert seen == [caller]
    assert guard.in_flight == 1
    idle = asyncio.create_task(guard.idle())
    await asyncio.sleep(0.01)
    assert not idle.done()
    release.set()
    assert await caller == "done"
    await asyncio.wait_for(idle, 1)
    assert guard.in_flight == 0


async def test_a_cut_call_raises_the_cut_error_and_leaves_no_cancel_pending() -> None:
    guard = CallGuard("s")

    async def caller() -> int:
        with pytest.raises(Cut):
            await guard.run(lambda: asyncio.Event().wait(), cut_error)
        await asyncio.sleep(0)  # a pending cancel would land here
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    task = asyncio.create_task(caller())
    await asyncio.sleep(0.01)
    guard.cut_all()
    guard.cut_all()  # idempotent while the cut runs
    assert await asyncio.wait_for(task, 1) == 0


async def test_a_call_that_swallows_the_cancel_is_cut_again() -> None:
    guard = CallGuard("s")
    swallowed = 0

    async def start() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                swallowed += 1  # as an SDK task group sometimes does, without uncancel()
                if swallowed == 3:
                    raise

    task = asyncio.create_task(guard.run(start, cut_error))
    await asyncio.sleep(0.01)
    guard.cut_all()
    with pytest.raises(Cut):
        await asyncio.wait_for(task, 2)
    assert swallowed == 3


async def test_a_call_that_swallows_the_cut_and_returns_keeps_its_result() -> None:
    guard = CallGuard("s")

    async def start() -> str:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        return "late"

    async def caller() -> tuple[str, int]:
        result = await guard.run(start, cut_error)
        await asyncio.sleep(0)
        task = asyncio.current_task()
        assert task is not None
        return result, task.cancelling()

    task = asyncio.create_task(caller())
    await asyncio.sleep(0.01)
    guard.cut_all()
    assert await asyncio.wait_for(task, 1) == ("late", 0)


async def test_a_caller_cancelled_by_someone_else_stays_cancelled_even_when_cut() -> None:
    guard = CallGuard("s")
    cut = asyncio.Event()

    async def start() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cut.set()  # the cut's cancel, swallowed
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # the caller's own cancellation (its client went away), meanwhile
        await asyncio.Event().wait()

    task = asyncio.create_task(guard.run(start, cut_error))
    await asyncio.sleep(0.01)
    guard.cut_all()
    await asyncio.wait_for(cut.wait(), 1)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)
    assert guard.in_flight == 0


async def test_a_cut_and_another_cancel_at_once_leave_the_caller_cancelled() -> None:
    guard = CallGuard("s")
    task = asyncio.create_task(guard.run(lambda: asyncio.Event().wait(), cut_error))
    await asyncio.sleep(0.01)
    guard.cut_all()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)


async def test_the_cut_is_anyios_cancel_scope_not_a_timer_or_a_task_per_call() -> None:
    """Before: a cutter task per call re-cancelled it every NUDGE_S, with uncancel() counting."""
    guard = CallGuard("s")
    task = asyncio.create_task(guard.run(lambda: asyncio.Event().wait(), cut_error))
    await asyncio.sleep(0.01)
    before = asyncio.all_tasks()
    guard.cut_all()
    assert asyncio.all_tasks() == before  # no task started to cut it
    with pytest.raises(Cut):
        await asyncio.wait_for(task, 1)


async def test_one_call_at_a_time_per_task() -> None:
    guard = CallGuard("s")

    async def nested() -> None:
        await guard.run(lambda: asyncio.sleep(0), cut_error)

    with pytest.raises(RuntimeError, match="one call at a time"):
        await guard.run(nested, cut_error)
    assert guard.in_flight == 0


async def test_cutting_with_nothing_in_flight_does_nothing() -> None:
    guard = CallGuard("s")
    guard.cut_all()
    assert await guard.run(lambda: asyncio.sleep(0, "ok"), cut_error) == "ok"
