"""The call journal's caller columns on the real SQLite store: a state DB of the schema before
them is migrated (old rows get empty subject and issuer) and a JWT caller's subject and issuer
are written and read back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dtma.adapters.sqlite_store import MIGRATIONS, SqliteStateStore
from dtma.adapters.state_repo import StateRepository
from dtma.domain.access import ToolCall
from tests.conftest import in_thread

pytestmark = pytest.mark.integration


# The migration that added the caller columns (later ones may follow it).
CALLERS = next(i for i, m in enumerate(MIGRATIONS) if "ADD COLUMN subject" in m)


def older_db(db: Path) -> None:
    """A state DB at the schema just before the caller columns, with one call."""
    with sqlite3.connect(db) as conn:
        for script in MIGRATIONS[:CALLERS]:
            conn.executescript(script)
        conn.execute(
            "INSERT INTO tool_calls (ts, toolbox, server, tool, token, duration, outcome, "
            "request_bytes, response_bytes) VALUES (1, 'tb', 's', 't', 'agent', 0.1, 'ok', 1, 2)"
        )
        conn.execute(f"PRAGMA user_version={CALLERS}")


async def test_an_older_journal_is_migrated_and_callers_are_recorded(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    await in_thread(older_db, db)
    store = SqliteStateStore(db)
    assert await store.open() == len(MIGRATIONS)
    try:
        repo = StateRepository(store)
        await repo.append_calls(
            [ToolCall(2, "tb", "s", "t", "oauth", 0.1, "ok", 1, 2, "alice", "https://idp")]
        )
        rows = await repo.calls("tb", 0, 10)
    finally:
        await store.close()
    assert [(r["token"], r["subject"], r["issuer"]) for r in rows] == [
        ("agent", "", ""),
        ("oauth", "alice", "https://idp"),
    ]
