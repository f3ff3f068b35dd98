"""Client tokens and the tool-call journal on the real SQLite store: tokens by hash only,
revocation at once, tokens and calls gone with their toolbox, the journal batched, paged by
cursor and pruned to its bound."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dtma.adapters.sqlite_store import SqliteStateStore
from dtma.adapters.state_repo import StateRepository
from dtma.domain.access import ToolCall, token_hash
from dtma.domain.records import EventRecord
from dtma.domain.retention import DAY_S, RetentionPolicy
from dtma.errors import Conflict, NotFound
from dtma.gateway.call_journal import OTHER, CallJournal
from dtma.gateway.tokens import MAX_TOKENS_PER_TOOLBOX, AccessTokens
from dtma.observability.metrics import Metrics
from tests.conftest import in_thread
from tests.fakes_gateway import FailingCallStore

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def repo(tmp_path: Path, clock: Clock) -> AsyncIterator[StateRepository]:
    store = SqliteStateStore.in_state_dir(tmp_path)
    await store.open()
    repo = StateRepository(store, clock=clock)
    for tb in ("tb-a", "tb-b"):
        await repo.add_revision(tb, "{}", "h-" + tb)
    try:
        yield repo
    finally:
        await store.close()


def call(toolbox: str = "tb-a", ts: float = 1.0, outcome: str = "ok", tool: str = "t") -> ToolCall:
    return ToolCall(ts, toolbox, "s", tool, "agent", 0.002, outcome, 10, 20)


async def test_tokens_verify_by_hash_and_revoke_at_once(
    repo: StateRepository, tmp_path: Path
) -> None:
    access = AccessTokens(repo)
    record, value = await access.issue("tb-a", "ci")
    grant = access.verify(value)
    assert grant is not None
    assert (grant.token_id, grant.toolbox) == (record.id, "tb-a")
    assert access.verify(value + "x") is None
    assert access.verify("not-a-dtma-token") is None
    # Stored by hash only: the value's bytes are in no file of the state dir.
    assert (await repo.token_hashes()) == [(token_hash(value), record.id, "tb-a")]
    files = await in_thread(
        lambda: b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    )
    assert value.encode() not in files
    # A fresh index (an agent restart) knows it from the DB.
    restarted = AccessTokens(repo)
    assert await restarted.load() == 1
    assert restarted.verify(value) == grant
    await access.flush_usage()
    assert (await access.list("tb-a"))[0].last_used is not None
    await access.revoke("tb-a", record.id)
    assert access.verify(value) is None
    with pytest.raises(NotFound):
        await access.revoke("tb-a", record.id)
    with pytest.raises(NotFound):
        await access.issue("tb-none")


async def test_a_toolbox_has_a_bounded_number_of_tokens(repo: StateRepository) -> None:
    access = AccessTokens(repo)
    for _ in range(MAX_TOKENS_PER_TOOLBOX):
        await access.issue("tb-b")
    with pytest.raises(Conflict):
        await access.issue("tb-b")
    assert len(await access.list("tb-b")) == MAX_TOKENS_PER_TOOLBOX


async def test_tokens_and_calls_go_with_their_toolbox(repo: StateRepository) -> None:
    access = AccessTokens(repo)
    _, value_a = await access.issue("tb-a")
    _, value_b = await access.issue("tb-b")
    await repo.append_calls([call("tb-a"), call("tb-b")])
    await repo.delete_toolbox("tb-a")
    await access.observe(EventRecord(1, 1.0, "toolbox_deleted", "tb-a", None, None, None, "", ""))
    assert access.verify(value_a) is None
    assert access.verify(value_b) is not None
    assert await repo.client_tokens("tb-a") == []
    assert await repo.calls("tb-a", 0, 10) == []
    assert len(await repo.calls("tb-b", 0, 10)) == 1


async def test_the_journal_batches_pages_and_is_pruned(repo: StateRepository, clock: Clock) -> None:
    metrics = Metrics()
    journal = CallJournal(repo, metrics, lambda tb: frozenset({"s__t"}))
    for i in range(250):
        journal.record(call(ts=1_000.0 + i, outcome="ok" if i % 2 else "error"))
    journal.record(call(tool="made-up"))
    assert await repo.calls("tb-a", 0, 10) == []  # nothing written yet: off the hot path
    assert await journal.flush() == 251
    first = await journal.page("tb-a", 0, 100)
    second = await journal.page("tb-a", int(first[-1]["cursor"]), 100)
    assert [r["cursor"] for r in first + second] == list(range(1, 201))
    assert set(first[0]) >= {"ts", "server", "tool", "token", "duration", "outcome"}
    sample = metrics.registry.get_sample_value
    assert (
        sample(
            "dtma_tool_calls_total",
            {"toolbox": "tb-a", "server": "s", "tool": "t", "outcome": "ok"},
        )
        == 125
    )
    assert (
        sample(
            "dtma_tool_calls_total",
            {"toolbox": "tb-a", "server": "s", "tool": OTHER, "outcome": "ok"},
        )
        == 1
    )
    assert (
        sample("dtma_tool_call_duration_seconds_count", {"toolbox": "tb-a", "server": "s"}) == 251
    )

    now = 1_000.0 + 300 + 8 * DAY_S
    clock.now = now
    journal.record(call(ts=now))
    await journal.flush()
    pruned = await repo.prune(RetentionPolicy(max_calls=100))
    assert pruned.calls == 251  # the 251 older rows are past max_age; the newest stays
    left = await journal.page("tb-a", 0, 1000)
    assert [r["ts"] for r in left] == [now]
    for i in range(150):
        journal.record(call(ts=now + i))
    await journal.flush()
    assert (await repo.prune(RetentionPolicy(max_calls=100))).calls == 51
    left = await journal.page("tb-a", 0, 1000)
    assert len(left) == 100
    assert left[-1]["ts"] == now + 149  # the newest stay


async def test_a_failed_write_keeps_the_batch_and_the_bound_holds() -> None:
    store = FailingCallStore()
    journal = CallJournal(store, None, None, max_pending=5)
    for i in range(3):
        journal.record(call(ts=float(i)))
    with pytest.raises(OSError, match="disk full"):
        await journal.flush()
    for i in range(3, 8):
        journal.record(call(ts=float(i)))
    store.down = False
    assert await journal.flush() == 5  # bounded: the oldest went
    assert [c.ts for c in store.rows] == [3.0, 4.0, 5.0, 6.0, 7.0]
