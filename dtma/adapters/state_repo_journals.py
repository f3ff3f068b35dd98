"""Idempotency keys and the error journal's rows: parts of StateRepository kept apart by
responsibility. Each method is one short transaction on the store's thread."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from dtma.adapters.sqlite_store import SqliteStateStore

T = TypeVar("T")


def _tx(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


class _Rows:
    _store: SqliteStateStore
    _now: Callable[[], float]

    def __init__(self, store: SqliteStateStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._now = clock


class IdempotencyRecords(_Rows):
    # -- idempotency keys ---------------------------------------------------------------------

    async def idempotent_response(self, key: str) -> tuple[str, int, str] | None:
        """(fingerprint, status, body) stored for `key`, if any."""

        def q(c: sqlite3.Connection) -> tuple[str, int, str] | None:
            row = c.execute("SELECT * FROM idempotency WHERE key = ?", (key,)).fetchone()
            return (row["fingerprint"], row["status"], row["body"]) if row else None

        return await self._store.run(q)

    async def store_idempotent_response(
        self, key: str, fingerprint: str, status: int, body: str, keep_seconds: float
    ) -> None:
        now = self._now()

        def q(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM idempotency WHERE created_at < ?", (now - keep_seconds,))
            c.execute(
                "INSERT OR IGNORE INTO idempotency (key, fingerprint, status, body, "
                "created_at) VALUES (?, ?, ?, ?, ?)",
                (key, fingerprint, status, body, now),
            )

        await self._store.run(lambda c: _tx(c, q))


class ErrorRecords(_Rows):
    # -- error journal ------------------------------------------------------------------------

    async def record_error(
        self,
        fp: str,
        *,
        category: str,
        kind: str,
        reason: str,
        toolbox: str | None,
        server: str | None,
        revision: int | None,
        sample: str,
        hint: str,
        keep: int,
    ) -> None:
        """Insert or count up one failure; a repeat of a resolved one reopens it. Keeps at most
        `keep` entries, dropping resolved ones first, then the stalest."""
        now = self._now()

        def q(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO errors (fingerprint, category, kind, reason, toolbox, server, "
                "revision, count, first_seen, last_seen, sample, hint) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?) ON CONFLICT(fingerprint) DO UPDATE "
                "SET count = count + 1, last_seen = excluded.last_seen, sample = excluded.sample,"
                " revision = excluded.revision, resolved_at = NULL, resolution = NULL",
                (fp, category, kind, reason, toolbox, server, revision, now, now, sample, hint),
            )
            c.execute(
                "DELETE FROM errors WHERE fingerprint IN (SELECT fingerprint FROM errors "
                "ORDER BY resolved_at IS NULL, last_seen DESC LIMIT -1 OFFSET ?)",
                (keep,),
            )

        await self._store.run(lambda c: _tx(c, q))

    async def resolve_errors(self, toolbox: str, describe: Callable[[int | None], str]) -> int:
        """Mark the toolbox's open entries resolved; `describe(revision)` says what changed."""
        open_rows = await self._store.run(
            lambda c: c.execute(
                "SELECT fingerprint, revision FROM errors "
                "WHERE toolbox = ? AND resolved_at IS NULL",
                (toolbox,),
            ).fetchall()
        )
        now = self._now()
        updates = [(now, describe(r["revision"]), r["fingerprint"]) for r in open_rows]
        if updates:
            await self._store.run(
                lambda c: c.executemany(
                    "UPDATE errors SET resolved_at = ?, resolution = ? WHERE fingerprint = ?",
                    updates,
                )
            )
        return len(updates)

    async def errors(
        self,
        *,
        toolbox: str | None = None,
        category: str | None = None,
        resolved: bool | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        def q(c: sqlite3.Connection) -> list[dict[str, Any]]:
            sql, params = "SELECT * FROM errors WHERE 1 = 1", list[Any]()
            if toolbox is not None:
                sql += " AND toolbox = ?"
                params.append(toolbox)
            if category is not None:
                sql += " AND category = ?"
                params.append(category)
            if resolved is not None:
                sql += " AND resolved_at IS " + ("NOT NULL" if resolved else "NULL")
            sql += " ORDER BY last_seen DESC LIMIT ?"
            params.append(limit)
            return [dict(r) for r in c.execute(sql, params)]

        return await self._store.run(q)
