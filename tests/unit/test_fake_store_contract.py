"""The in-memory FakeStore (tests/fake_store.py) answers as the real StateRepository on SQLite
does, for every call the engine makes: the same script runs against both and the answers,
timestamps aside, must be equal. This is what lets the engine's unit tests trust the fake. A unit
test of the fake itself: SQLite in a temporary directory, no engine, no network."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import pytest

from dtma.adapters.sqlite_store import SqliteStateStore
from dtma.adapters.state_repo import StateRepository
from dtma.domain.records import RestartState
from dtma.errors import PreconditionFailed
from dtma.ports import StateStore
from tests.fake_store import FakeStore

TIMES = {"created_at", "updated_at", "ts"}


def _plain(value: Any) -> Any:
    """Records as dicts without their timestamps, recursively."""
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items() if k not in TIMES}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in TIMES}
    return value


async def _script(store: StateStore) -> list[Any]:
    out: list[Any] = []

    async def note(label: str, call: Any) -> None:
        try:
            out.append((label, _plain(await call)))
        except (PreconditionFailed, ValueError) as exc:
            out.append((label, type(exc).__name__))

    await note("add h1", store.add_revision("tb", '{"v":1}', "h1"))
    await note("add h1 again", store.add_revision("tb", '{"v":1}', "h1"))
    await note("if-match mismatch", store.add_revision("tb", '{"v":2}', "h2", if_match=7))
    await note("toolbox", store.toolbox("tb"))
    await store.mark_stable("tb", 1)
    await note("after stable", store.toolbox("tb"))
    await note("serving spec again", store.add_revision("tb", '{"v":1}', "h1"))
    await note("add h2", store.add_revision("tb", '{"v":2}', "h2", if_match=1))
    await note("h1 while h2 is wanted", store.add_revision("tb", '{"v":1}', "h1"))
    await store.clear_target("tb", 2)  # not the target any more: no change
    await note("after stale clear", store.toolbox("tb"))
    await store.clear_target("tb", 3)
    await note("after clear", store.toolbox("tb"))
    await note("retry", store.add_revision("tb", '{"v":1}', "h1", retry=True))
    await note("no other stable", store.newest_stable_other_than("tb", 1))
    await store.mark_stable("tb", 4)
    await note("other stable", store.newest_stable_other_than("tb", 4))
    await note("revisions", store.revisions("tb"))
    await note("latest", store.latest_revision("tb"))
    await store.update_toolbox("tb", phase="healthy", stopped=1)
    await note("updated", store.toolbox("tb"))
    await note("bad field", store.update_toolbox("tb", nope=1))
    await store.update_toolbox("missing", phase="healthy")
    await note("update of a missing toolbox", store.toolbox("missing"))
    rows = await store.listing()  # (id, phase, stable, updated_at, newest): time aside
    out.append(("listing", [(r[0], r[1], r[2], r[4]) for r in rows]))
    await store.add_revision("other", "{}", "x")
    await note("toolboxes", store.toolboxes())
    await note("op", store.add_operation("op-1", "apply", "tb", 4, {"servers": []}))
    await store.add_operation("op-2", "delete", "tb", None)
    await store.finish_operation("op-1", "rolled_back", "why")
    await note("running ops", store.running_operations())
    await note("finished op", store.operation("op-1"))
    await store.finish_operation("op-2", "failed", None, revision=4)
    await note("op revision", store.operation("op-2"))
    await store.set_tools("tb", "a", 4, ["t1", "t2"])
    await note("tools", store.tools("tb"))
    await store.save_restart_state("tb", "a", RestartState(4, 2, (1.5, 2.5)))
    await note("restarts", store.restart_states("tb"))
    await store.append_event("k1", toolbox="tb", server="a", revision=4, reason="r", message="m")
    await store.append_event("k2", toolbox="other")
    await note("events", store.events(0, None, 10))
    await note("events of tb after 1", store.events(1, "tb", 10))
    await store.delete_toolbox("tb")
    await note("deleted", store.toolbox("tb"))
    await note("revisions gone", store.revisions("tb"))
    await note("restarts gone", store.restart_states("tb"))
    await note("tools gone", store.tools("tb"))
    await note("fresh after delete", store.add_revision("tb", '{"v":1}', "h1"))
    return out


@pytest.fixture
async def sqlite_repo(tmp_path: Path) -> AsyncIterator[StateRepository]:
    store = SqliteStateStore.in_state_dir(tmp_path)
    await store.open()
    try:
        yield StateRepository(store)
    finally:
        await store.close()


async def test_the_fake_store_answers_as_the_sqlite_repository(
    sqlite_repo: StateRepository,
) -> None:
    real = await _script(sqlite_repo)
    fake = await _script(FakeStore())
    for (label, want), (_, got) in zip(real, fake, strict=True):
        assert got == want, label
