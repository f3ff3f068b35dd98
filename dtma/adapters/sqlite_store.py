"""The agent's state in one SQLite file: WAL mode, a versioned schema, forward-only migrations.

All access goes through one dedicated worker thread that owns the connection, so the event loop
never blocks on disk and SQLite sees a single writer. Secret values are never stored here.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar, cast

from dtma.errors import ConfigError

T = TypeVar("T")

STATE_FILE_NAME = "state.db"

# Forward-only: append new steps, never edit a released one. Index + 1 is the schema version.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    """
    CREATE TABLE toolboxes (
        id TEXT PRIMARY KEY,
        current_revision INTEGER,          -- the revision that should be serving
        stable_revision INTEGER,           -- newest revision whose gate passed
        target_revision INTEGER,           -- set while a rollout is in flight
        phase TEXT NOT NULL,
        stopped INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE revisions (
        toolbox TEXT NOT NULL,
        number INTEGER NOT NULL,
        spec TEXT NOT NULL,                -- canonical JSON; never holds secret values
        spec_hash TEXT NOT NULL,
        stable INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        PRIMARY KEY (toolbox, number)
    );
    CREATE TABLE operations (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        toolbox TEXT NOT NULL,
        state TEXT NOT NULL,
        revision INTEGER,
        error TEXT,
        params TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX operations_by_toolbox ON operations (toolbox, created_at);
    CREATE TABLE events (
        cursor INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        toolbox TEXT,
        server TEXT,
        revision INTEGER,
        operation TEXT,
        reason TEXT NOT NULL DEFAULT '',
        message TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_by_toolbox ON events (toolbox, cursor);
    CREATE TABLE server_tools (
        toolbox TEXT NOT NULL,
        server TEXT NOT NULL,
        revision INTEGER NOT NULL,
        tools TEXT NOT NULL,
        PRIMARY KEY (toolbox, server)
    );
    """,
    """
    CREATE TABLE idempotency (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,        -- method, path and a hash of the body
        status INTEGER NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    """,
    """
    CREATE TABLE errors (
        fingerprint TEXT PRIMARY KEY,
        category TEXT NOT NULL,
        kind TEXT NOT NULL,
        reason TEXT NOT NULL,
        toolbox TEXT,
        server TEXT,
        revision INTEGER,
        count INTEGER NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        sample TEXT NOT NULL,              -- redacted before it gets here
        hint TEXT NOT NULL,
        resolved_at REAL,
        resolution TEXT
    );
    CREATE INDEX errors_by_toolbox ON errors (toolbox, resolved_at);
    """,
    """
    CREATE TABLE server_restarts (
        toolbox TEXT NOT NULL,
        server TEXT NOT NULL,
        revision INTEGER NOT NULL,         -- the revision the count belongs to
        restarts INTEGER NOT NULL,
        attempts TEXT NOT NULL DEFAULT '[]', -- wall-clock times of restarts inside the window
        gave_up INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL,
        PRIMARY KEY (toolbox, server)
    );
    """,
    """
    CREATE TABLE client_tokens (
        id TEXT PRIMARY KEY,
        toolbox TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        hash TEXT NOT NULL UNIQUE,         -- sha256 of the value; the value is never stored
        created_at REAL NOT NULL,
        last_used REAL
    );
    CREATE INDEX client_tokens_by_toolbox ON client_tokens (toolbox, created_at);
    CREATE TABLE tool_calls (
        cursor INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        toolbox TEXT NOT NULL,
        server TEXT NOT NULL,
        tool TEXT NOT NULL,
        token TEXT NOT NULL,               -- a token id or 'agent'; never a token value
        duration REAL NOT NULL,
        outcome TEXT NOT NULL,
        request_bytes INTEGER NOT NULL,    -- sizes only: never arguments or results
        response_bytes INTEGER NOT NULL
    );
    CREATE INDEX tool_calls_by_toolbox ON tool_calls (toolbox, cursor);
    """,
    """
    CREATE TABLE tool_contracts (
        toolbox TEXT NOT NULL,
        revision INTEGER NOT NULL,
        server TEXT NOT NULL,
        hash TEXT NOT NULL,                -- sha256 of the canonical contract
        contract TEXT NOT NULL,            -- tool name -> input schema (JSON); no values
        created_at REAL NOT NULL,
        PRIMARY KEY (toolbox, revision, server)
    );
    """,
    """
    -- 1 while a restart is counted but its container may not exist yet (a write-ahead)
    ALTER TABLE server_restarts ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
    """,
    """
    -- a JWT caller's `sub` and `iss` (token 'oauth'); '' for dtma tokens. Never a token.
    ALTER TABLE tool_calls ADD COLUMN subject TEXT NOT NULL DEFAULT '';
    ALTER TABLE tool_calls ADD COLUMN issuer TEXT NOT NULL DEFAULT '';
    """,
    """
    CREATE TABLE tool_pins (
        toolbox TEXT NOT NULL,
        revision INTEGER NOT NULL,
        server TEXT NOT NULL,
        pins TEXT NOT NULL,                -- tool name -> digests of description, schema (JSON)
        created_at REAL NOT NULL,
        PRIMARY KEY (toolbox, revision, server)
    );
    """,
)


class SqliteStateStore:
    """Owns the SQLite connection and its thread. Open once at start, close at shutdown."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dtma-sqlite")
        self._conn: sqlite3.Connection | None = None
        # The connection's total_changes after the last job: a write generation (every row an
        # INSERT, UPDATE or DELETE touched bumps it). Written on the store's thread after the
        # job and before its caller resumes; read on the loop.
        self.changes = -1

    @classmethod
    def in_state_dir(cls, state_dir: Path) -> SqliteStateStore:
        return cls(state_dir / STATE_FILE_NAME)

    async def open(self) -> int:
        """Open (creating if needed), enable WAL, migrate. Returns the schema version."""
        return await self._run(self._open_sync)

    async def schema_version(self) -> int:
        return await self._run(lambda: self._version(self._connection()))

    async def close(self) -> None:
        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(_close)
        self._executor.shutdown(wait=True)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the store's thread. For repositories; keep `fn` short.

        A cursor never leaves that thread: one that `fn` returns (`lambda c: c.execute(...)`)
        is closed there and None comes back instead. Collected on the event loop's thread, its
        statement would be reset there while this thread runs another one on the same
        connection (SQLITE_MISUSE: "bad parameter or other API misuse")."""

        def on_store_thread() -> T:
            result = fn(self._connection())
            if isinstance(result, sqlite3.Cursor):
                result.close()
                return cast(T, None)
            return result

        return await self._run(on_store_thread)

    async def _run(self, fn: Callable[[], T]) -> T:
        def job() -> T:
            try:
                return fn()
            finally:
                if self._conn is not None:
                    self.changes = self._conn.total_changes

        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("state store is not open")
        return self._conn

    def _open_sync(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open state database {self.path}: {exc}") from None
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        self._conn = conn
        self.path.chmod(0o600)
        return self._migrate(conn)

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self, conn: sqlite3.Connection) -> int:
        current = self._version(conn)
        if current > len(MIGRATIONS):
            raise ConfigError(
                f"state database {self.path} has schema version {current}, newer than this agent "
                f"understands ({len(MIGRATIONS)}); upgrade the agent"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(MIGRATIONS[version - 1]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={version}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return self._version(conn)


def _statements(script: str) -> list[str]:
    """Split a script into statements; sqlite3 decides where one ends (comments, strings)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement in a migration: {buf.strip()[:80]}")
    return out
