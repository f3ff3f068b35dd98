"""A cancel is never lost: not when an anyio task group turns it into an ExceptionGroup that a
probe catches as a failure, and not when the task being stopped swallows it anyway.

This is the shape of a stall seen once in CI: a secret rotation waited 90 s in `old.remove()`,
because halting a server awaited a steady-probe task whose cancel had become a probe failure."""

from __future__ import annotations

import asyncio

import anyio

from dtma.cancellation import cancel_and_wait, raise_if_cancelling
from dtma.engine.supervisor import Supervisor


async def _child_that_fails_on_cancel() -> None:
    try:
        await asyncio.sleep(10)
    except BaseException:
        raise ConnectionResetError("stream closed") from None  # cleanup that fails


async def _probe(grade_cancel: bool) -> str:
    """A probe as the adapters write one: SDK work in a task group, any Exception graded."""
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_child_that_fails_on_cancel)
            await asyncio.sleep(10)
    except Exception:
        if grade_cancel:
            raise_if_cancelling()
        return "probe failed"
    return "ok"


async def test_a_task_group_turns_a_cancel_into_a_failure_unless_it_is_reraised() -> None:
    swallowing = asyncio.create_task(_probe(grade_cancel=False))
    await asyncio.sleep(0.01)
    swallowing.cancel()
    assert await swallowing == "probe failed"  # what happened before the fix

    fixed = asyncio.create_task(_probe(grade_cancel=True))
    await asyncio.sleep(0.01)
    fixed.cancel()
    await asyncio.wait({fixed}, timeout=1)
    assert fixed.cancelled()


def test_raise_if_cancelling_does_nothing_without_a_pending_cancel() -> None:
    async def body() -> str:
        raise_if_cancelling()
        return "went on"

    assert asyncio.run(body()) == "went on"


async def test_cancel_and_wait_repeats_the_cancel_until_the_task_ends() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 3:
                    raise
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, nudge=0.01), timeout=2)
    assert task.cancelled()
    assert swallowed == 3
    await cancel_and_wait(task)  # idempotent on an ended task
    await cancel_and_wait(None)


async def test_a_supervised_loop_whose_probe_swallows_the_cancel_still_ends() -> None:
    sup = Supervisor(base=0.01, cap=0.01)
    probes = 0

    async def steady() -> None:
        nonlocal probes
        while True:
            probes += 1
            async with anyio.create_task_group() as tg:  # raises an ExceptionGroup on cancel
                tg.start_soon(_child_that_fails_on_cancel)
                await asyncio.sleep(10)

    task = asyncio.create_task(sup.run("server tb/x", "test-cancel", steady, forever=False))
    await asyncio.sleep(0.01)
    task.cancel()  # once: the supervisor itself must not lose it
    try:
        await asyncio.wait({task}, timeout=0.5)
        assert task.cancelled()
        assert probes == 1  # ended, not restarted as a failed body
        assert sup.down() == []
    finally:
        await cancel_and_wait(task, nudge=0.01)
