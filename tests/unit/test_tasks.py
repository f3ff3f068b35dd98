"""cancel_and_wait ends a task whose first cancel was lost (as inside a probe's anyio stack)."""

from __future__ import annotations

import asyncio

import pytest

from dtma.engine.tasks import cancel_and_wait


async def _swallows_one_cancel(lost: list[bool]) -> None:
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if lost:
                raise
            lost.append(True)  # the first cancel is lost; the loop carries on


async def test_a_lost_cancel_is_repeated_until_the_task_ends() -> None:
    lost: list[bool] = []
    task = asyncio.create_task(_swallows_one_cancel(lost))
    await asyncio.sleep(0.02)
    await asyncio.wait_for(cancel_and_wait(task, every=0.05), timeout=2)
    assert lost == [True]
    assert task.cancelled()


async def test_a_single_cancel_alone_would_not_have_ended_it() -> None:
    lost: list[bool] = []
    task = asyncio.create_task(_swallows_one_cancel(lost))
    await asyncio.sleep(0.02)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.2)
    assert not done  # the pattern cancel_and_wait replaces: this wait would never end
    await cancel_and_wait(task, every=0.05)
    assert task.done()


async def test_a_task_that_failed_is_waited_for_and_its_exception_dropped() -> None:
    async def boom() -> None:
        raise RuntimeError("x")

    task = asyncio.create_task(boom())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.done()
    with pytest.raises(RuntimeError):
        task.result()
