"""Pruning against the real SQLite store: events, finished operations and revisions go by age
and count; running operations and a toolbox's protected revisions never do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dtma.adapters.sqlite_store import SqliteStateStore
from dtma.adapters.state_repo import StateRepository
from dtma.domain.retention import DAY_S, RetentionPolicy

pytestmark = pytest.mark.integration


class _Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStateStore]:
    store = SqliteStateStore.in_state_dir(tmp_path)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def _insert_events(store: SqliteStateStore, count: int, ts: float) -> None:
    await store.run(
        lambda c: c.executemany(
            "INSERT INTO events (ts, kind) VALUES (?, 'e')", [(ts,) for _ in range(count)]
        )
    )


async def test_events_go_by_age_then_by_count_oldest_first(store: SqliteStateStore) -> None:
    clock = _Clock()
    repo = StateRepository(store, clock=clock)
    await _insert_events(store, 300, clock.now)  # these will be eight days old
    clock.now += 8 * DAY_S
    await _insert_events(store, 20_000, clock.now - 60)
    await repo.append_event("newest")
    pruned = await repo.prune(RetentionPolicy(max_events=10_000))
    assert pruned.events == 10_301  # 300 by age, then the rest beyond the newest 10,000
    left = await repo.events(0, None, limit=1)
    assert left[0].cursor == 10_302  # in batches, oldest first
    assert (await repo.events(20_300, None, limit=10))[0].kind == "newest"
    assert (await repo.prune(RetentionPolicy(max_events=10_000))).events == 0  # idempotent


async def test_finished_operations_go_and_running_ones_stay(store: SqliteStateStore) -> None:
    clock = _Clock()
    repo = StateRepository(store, clock=clock)
    await repo.add_operation("op-running-old", "apply", "tb", 1)
    for i in range(5):
        await repo.add_operation(f"op-old-{i}", "apply", "tb", 1)
        await repo.finish_operation(f"op-old-{i}", "succeeded")
    clock.now += 8 * DAY_S
    for i in range(150):
        clock.now += 1
        await repo.add_operation(f"op-{i}", "restart", "tb", 1)
        await repo.finish_operation(f"op-{i}", "failed", "x")
    pruned = await repo.prune(RetentionPolicy(max_operations=100))
    assert pruned.operations == 55  # five by age, fifty beyond the newest hundred
    assert await repo.operation("op-running-old") is not None
    assert await repo.operation("op-old-0") is None
    assert await repo.operation("op-49") is None
    assert await repo.operation("op-50") is not None
    assert [op.id for op in await repo.running_operations()] == ["op-running-old"]


async def test_revisions_keep_the_serving_stable_newest_and_rollback_target(
    store: SqliteStateStore,
) -> None:
    clock = _Clock()
    repo = StateRepository(store, clock=clock)
    for n in range(1, 9):
        rev, created = await repo.add_revision("tb", f'{{"n":{n}}}', f"h{n}")
        assert created
        assert rev.number == n
        if n in (2, 5):
            await repo.mark_stable("tb", n)
    await repo.update_toolbox("tb", target_revision=7)  # a rollout of 7 is in flight
    await repo.add_operation("op-queued", "rollback", "tb", 3)  # queued behind it
    for n in range(1, 4):
        await repo.add_revision("other", f'{{"n":{n}}}', f"o{n}")
    clock.now += 30 * DAY_S
    pruned = await repo.prune(RetentionPolicy())
    # tb: 5 serves and is stable, 2 is the rollback target, 7 is in flight, 8 is the newest,
    # 3 belongs to a queued operation.
    assert [r.number for r in await repo.revisions("tb")] == [2, 3, 5, 7, 8]
    assert [r.number for r in await repo.revisions("other")] == [3]  # only the newest
    assert pruned.revisions == 5
    assert (await repo.newest_stable_other_than("tb", 5)) is not None
