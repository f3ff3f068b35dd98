"""Admission control: a bounded, first-come-first-served count of servers starting at once."""

from __future__ import annotations

import asyncio

import pytest

from dtma.engine.admission import Admission


async def test_starts_beyond_the_limit_wait_in_order_until_a_slot_is_released() -> None:
    admission = Admission(2)
    first, second = await admission.acquire(), await admission.acquire()
    order: list[int] = []

    async def later(i: int) -> None:
        slot = await admission.acquire()
        order.append(i)
        slot.release()

    waiters = [asyncio.create_task(later(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert (admission.starting, admission.waiting, order) == (2, 3, [])
    first.release()
    first.release()  # idempotent: one release per slot, never two
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    assert admission.starting == 1
    second.release()
    assert admission.starting == 0


async def test_a_cancelled_waiter_holds_no_slot() -> None:
    admission = Admission(1)
    held = await admission.acquire()
    waiter = asyncio.create_task(admission.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    held.release()
    assert (admission.starting, admission.waiting) == (0, 0)
    async with admission.hold():
        assert admission.starting == 1
    assert admission.starting == 0


def test_the_limit_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Admission(0)
