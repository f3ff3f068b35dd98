"""The state DB's part in durability and last-write-wins (real SQLite, no Docker)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dtma.adapters.sqlite_store import SqliteStateStore
from dtma.adapters.state_repo import StateRepository
from dtma.domain.records import RestartState

pytestmark = pytest.mark.integration


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[StateRepository]:
    store = SqliteStateStore.in_state_dir(tmp_path)
    await store.open()
    try:
        yield StateRepository(store)
    finally:
        await store.close()


async def test_restart_states_round_trip_and_go_with_the_toolbox(repo: StateRepository) -> None:
    await repo.add_revision("tb", "{}", "h1")
    await repo.save_restart_state("tb", "a", RestartState(1, 2, (100.5, 200.25)))
    await repo.save_restart_state("tb", "b", RestartState(1, 3, (), gave_up=True))
    await repo.save_restart_state("tb", "c", RestartState(1, 1, (5.0,), pending=True))
    assert (await repo.restart_states("tb"))["c"].pending
    await repo.save_restart_state("tb", "c", RestartState(1, 1, (5.0,)))
    await repo.save_restart_state("tb", "a", RestartState(1, 3, (100.5, 200.25, 300.0)))
    assert await repo.restart_states("tb") == {
        "a": RestartState(1, 3, (100.5, 200.25, 300.0)),
        "b": RestartState(1, 3, (), gave_up=True),
        "c": RestartState(1, 1, (5.0,)),
    }
    await repo.delete_toolbox("tb")
    assert await repo.restart_states("tb") == {}


async def test_the_serving_spec_applied_during_another_rollout_is_a_new_revision(
    repo: StateRepository,
) -> None:
    one, created = await repo.add_revision("tb", "{a}", "A")
    assert created
    await repo.mark_stable("tb", one.number)
    assert (await repo.add_revision("tb", "{a}", "A"))[1] is False  # serving, idle: unchanged
    two, created = await repo.add_revision("tb", "{b}", "B")
    assert (two.number, created) == (2, True)
    assert (await repo.toolbox("tb")).target_revision == 2  # type: ignore[union-attr]
    assert (await repo.add_revision("tb", "{b}", "B"))[1] is False  # B is the target
    three, created = await repo.add_revision("tb", "{a}", "A")  # last write wins
    assert created
    assert three.number == 3
    assert (await repo.toolbox("tb")).target_revision == 3  # type: ignore[union-attr]
    # B's rollout ending does not clear A's target.
    await repo.clear_target("tb", 2)
    assert (await repo.toolbox("tb")).target_revision == 3  # type: ignore[union-attr]
    await repo.mark_stable("tb", 2)
    record = await repo.toolbox("tb")
    assert record is not None
    assert (record.current_revision, record.target_revision) == (2, 3)
    await repo.mark_stable("tb", 3)
    record = await repo.toolbox("tb")
    assert record is not None
    assert (record.current_revision, record.target_revision) == (3, None)


async def test_a_failed_rollout_or_a_failed_toolbox_does_not_make_a_reapply_a_no_op(
    repo: StateRepository,
) -> None:
    await repo.add_revision("tb", "{a}", "A")
    await repo.mark_stable("tb", 1)
    await repo.add_revision("tb", "{b}", "B")
    await repo.clear_target("tb", 2)  # B failed
    rev, created = await repo.add_revision("tb", "{b}", "B")
    assert (rev.number, created) == (3, True)
    await repo.clear_target("tb", 3)
    rev, created = await repo.add_revision("tb", "{a}", "A", retry=True)  # toolbox failed
    assert (rev.number, created) == (4, True)


async def test_the_listing_is_reused_only_while_nothing_was_written(repo: StateRepository) -> None:
    await repo.add_revision("tb", "{a}", "A")
    first = await repo.listing()
    assert [(r[0], r[4]) for r in first] == [("tb", 1)]
    assert await repo.listing() is first  # no write since: the same rows, no query
    await repo.mark_stable("tb", 1)
    assert (await repo.listing())[0][2] == 1
    await repo.update_toolbox("tb", phase="degraded")
    assert (await repo.listing())[0][1] == "degraded"
    await repo.add_revision("tb", "{b}", "B")
    assert (await repo.listing())[0][4] == 2
    await repo.add_revision("other", "{a}", "A")
    assert [r[0] for r in await repo.listing()] == ["other", "tb"]
    await repo.delete_toolbox("tb")
    assert [r[0] for r in await repo.listing()] == ["other"]
