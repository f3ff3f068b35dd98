"""The journal's live subscriptions are capped, each one's queue is bounded, and one failing
observer does not fail an event or keep it from the others."""

from __future__ import annotations

import pytest

from dtma.domain.records import EventRecord
from dtma.engine.journal import Journal
from dtma.errors import TooManyRequests


class _ListStore:
    """An in-memory event store: cursors count up from 1."""

    def __init__(self) -> None:
        self.events: list[EventRecord] = []

    async def append_event(self, kind: str, **fields: object) -> EventRecord:
        event = EventRecord(
            len(self.events) + 1,
            0.0,
            kind,
            None,
            None,
            None,
            None,
            str(fields.get("reason", "")),
            str(fields.get("message", "")),
        )
        self.events.append(event)
        return event


async def test_subscriptions_beyond_the_cap_are_refused_until_one_leaves() -> None:
    journal = Journal(_ListStore(), max_subscribers=2)
    first, _second = journal.subscribe(), journal.subscribe()
    with pytest.raises(TooManyRequests, match="DTMA_SSE_MAX_SUBSCRIBERS"):
        journal.subscribe()
    journal.unsubscribe(first)
    journal.subscribe()
    assert journal.subscribers == 2


async def test_a_reader_that_falls_a_queue_behind_is_marked_and_gets_nothing_more() -> None:
    journal = Journal(_ListStore(), queue_size=10)
    slow, fast = journal.subscribe(), journal.subscribe()
    for i in range(25):
        await journal.emit("e", message=str(i))
        event = await fast.get(1)
        assert event is not None
        assert event.cursor == i + 1
    assert slow.overflowed
    assert not fast.overflowed
    got = [await slow.get(1) for _ in range(10)]
    assert [e.cursor for e in got if e] == list(range(1, 11))  # nothing was queued after that
    slow.reset()  # the reader re-reads what it missed from the store, and goes on live
    await journal.emit("e")
    event = await slow.get(1)
    assert event is not None
    assert event.cursor == 26
    assert not slow.overflowed


async def test_closing_wakes_even_a_full_subscription() -> None:
    journal = Journal(_ListStore(), queue_size=10)
    sub = journal.subscribe()
    for _ in range(10):
        await journal.emit("e")
    journal.close_subscribers()
    assert await sub.get(1) is None


class _Failing:
    async def observe(self, event: EventRecord) -> None:
        raise RuntimeError("an observer's own bug")


class _Seen:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    async def observe(self, event: EventRecord) -> None:
        self.kinds.append(event.kind)


async def test_a_failing_observer_neither_fails_the_event_nor_starves_the_next() -> None:
    store, seen = _ListStore(), _Seen()
    journal = Journal(store, observers=[_Failing(), seen])
    event = await journal.emit("toolbox_deleted")
    assert event.kind == "toolbox_deleted"
    assert [e.kind for e in store.events] == ["toolbox_deleted"]
    assert seen.kinds == ["toolbox_deleted"]
