"""The SQLite state file: WAL, private mode, migrations, refusal of a newer schema."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from dtma.adapters.sqlite_store import MIGRATIONS, SqliteStateStore
from dtma.errors import ConfigError

pytestmark = pytest.mark.integration


async def test_open_creates_a_private_wal_database_at_the_latest_schema(tmp_path: Path) -> None:
    store = SqliteStateStore.in_state_dir(tmp_path / "state")
    assert await store.open() == len(MIGRATIONS)
    await store.close()
    db = tmp_path / "state" / "state.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_reopen_is_idempotent(tmp_path: Path) -> None:
    for _ in range(2):
        store = SqliteStateStore.in_state_dir(tmp_path)
        assert await store.open() == len(MIGRATIONS)
        await store.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 5}")
    store = SqliteStateStore(db)
    with pytest.raises(ConfigError, match="newer than this agent understands"):
        await store.open()
    await store.close()


async def test_a_cursor_never_leaves_the_store_thread(tmp_path: Path) -> None:
    """Statements returned as cursors (`lambda c: c.execute(...)`) used to be collected on the
    event loop's thread while the store's thread ran the next statement on the same connection:
    intermittent `sqlite3.InterfaceError: bad parameter or other API misuse`."""
    store = SqliteStateStore.in_state_dir(tmp_path)
    await store.open()
    try:
        returned = await store.run(
            lambda c: c.execute("INSERT INTO events (ts, kind) VALUES (1, 'e')")
        )
        assert returned is None
        for _ in range(30):  # the shape that failed about one run in three
            await store.run(
                lambda c: c.executemany(
                    "INSERT INTO events (ts, kind) VALUES (?, 'e')", [(2.0,) for _ in range(2_000)]
                )
            )
        count = await store.run(lambda c: c.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        assert count == 1 + 30 * 2_000
    finally:
        await store.close()
