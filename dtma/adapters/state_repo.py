"""Typed reads and writes of the agent's state, on top of SqliteStateStore.

Every method is one short transaction on the store's thread. Rows never carry secret values:
specs hold Vault references only.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, TypeVar

from dtma.adapters.state_repo_contracts import ContractRecords
from dtma.adapters.state_repo_journals import ErrorRecords, IdempotencyRecords, _tx
from dtma.adapters.state_repo_restarts import RestartRecords
from dtma.adapters.state_repo_retention import RetentionRecords
from dtma.adapters.state_repo_tokens import CallRecords, TokenRecords
from dtma.domain.records import (
    EventRecord,
    OperationRecord,
    RevisionRecord,
    ToolboxListing,
    ToolboxRecord,
)
from dtma.errors import PreconditionFailed

T = TypeVar("T")


class StateRepository(
    IdempotencyRecords,
    ErrorRecords,
    RetentionRecords,
    RestartRecords,
    TokenRecords,
    CallRecords,
    ContractRecords,
):
    """Typed state access; construct with (store, clock=time.time)."""

    _listing: tuple[int, list[ToolboxListing]] | None = None  # (write generation, rows)

    # -- toolboxes and revisions ------------------------------------------------------------

    async def toolbox(self, toolbox_id: str) -> ToolboxRecord | None:
        def q(c: sqlite3.Connection) -> ToolboxRecord | None:
            row = c.execute("SELECT * FROM toolboxes WHERE id = ?", (toolbox_id,)).fetchone()
            return _toolbox(row) if row else None

        return await self._store.run(q)

    async def toolboxes(self) -> list[ToolboxRecord]:
        return await self._store.run(
            lambda c: [_toolbox(r) for r in c.execute("SELECT * FROM toolboxes ORDER BY id")]
        )

    async def add_revision(
        self,
        toolbox_id: str,
        spec_json: str,
        spec_hash: str,
        if_match: int | None = None,
        *,
        retry: bool = False,
    ) -> tuple[RevisionRecord, bool]:
        """Store a new revision, atomically, and make it the target. Returns (revision, created).

        Not created (a no-op) when the spec's hash equals that of the wanted revision: the one
        being rolled out (or queued), else the serving one. So the serving spec applied while
        another revision rolls out is a new revision (last write wins), and re-applying the
        spec of a failed revision makes a new revision (a retry), as does any apply with
        `retry` (the toolbox failed). `if_match` must equal the newest revision number, else
        PreconditionFailed.
        """
        now = self._now()

        def q(c: sqlite3.Connection) -> tuple[RevisionRecord, bool]:
            last = c.execute(
                "SELECT * FROM revisions WHERE toolbox = ? ORDER BY number DESC LIMIT 1",
                (toolbox_id,),
            ).fetchone()
            if if_match is not None and (last is None or last["number"] != if_match):
                raise PreconditionFailed(
                    f"If-Match {if_match} does not match the newest revision "
                    f"({last['number'] if last else 'none'})"
                )
            tb = c.execute("SELECT * FROM toolboxes WHERE id = ?", (toolbox_id,)).fetchone()
            wanted = None
            if tb is not None:
                wanted = (
                    tb["target_revision"]
                    if tb["target_revision"] is not None
                    else tb["current_revision"]
                )
            if wanted is not None and not retry:
                row = c.execute(
                    "SELECT * FROM revisions WHERE toolbox = ? AND number = ?",
                    (toolbox_id, wanted),
                ).fetchone()
                if row is not None and row["spec_hash"] == spec_hash:
                    return _revision(row), False
            number = (last["number"] + 1) if last else 1
            c.execute(
                "INSERT INTO revisions (toolbox, number, spec, spec_hash, stable, created_at)"
                " VALUES (?, ?, ?, ?, 0, ?)",
                (toolbox_id, number, spec_json, spec_hash, now),
            )
            c.execute(
                "INSERT INTO toolboxes (id, phase, created_at, updated_at) "
                "VALUES (?, 'deploying', ?, ?) ON CONFLICT(id) DO NOTHING",
                (toolbox_id, now, now),
            )
            c.execute(
                "UPDATE toolboxes SET target_revision = ?, updated_at = ? WHERE id = ?",
                (number, now, toolbox_id),
            )
            row = c.execute(
                "SELECT * FROM revisions WHERE toolbox = ? AND number = ?", (toolbox_id, number)
            ).fetchone()
            return _revision(row), True

        return await self._store.run(lambda c: _tx(c, q))

    async def revision(self, toolbox_id: str, number: int) -> RevisionRecord | None:
        def q(c: sqlite3.Connection) -> RevisionRecord | None:
            row = c.execute(
                "SELECT * FROM revisions WHERE toolbox = ? AND number = ?", (toolbox_id, number)
            ).fetchone()
            return _revision(row) if row else None

        return await self._store.run(q)

    async def latest_revision(self, toolbox_id: str) -> RevisionRecord | None:
        def q(c: sqlite3.Connection) -> RevisionRecord | None:
            row = c.execute(
                "SELECT * FROM revisions WHERE toolbox = ? ORDER BY number DESC LIMIT 1",
                (toolbox_id,),
            ).fetchone()
            return _revision(row) if row else None

        return await self._store.run(q)

    async def listing(self) -> list[ToolboxListing]:
        """Every toolbox with its newest revision number, in one query of just the columns a
        listing shows (GET /v1/toolboxes at a hundred toolboxes runs it a thousand times a
        second, so it stays lean: tuples, no Row lookups). While no write has completed since
        the last query (the store's write generation), its rows are returned again without a
        trip to the store's thread. Do not mutate the list."""
        cached = self._listing
        if cached is not None and cached[0] == self._store.changes:
            return cached[1]

        def q(c: sqlite3.Connection) -> tuple[int, list[ToolboxListing]]:
            cur = c.cursor()
            cur.row_factory = None
            rows = cur.execute(
                "SELECT t.id, t.phase, t.stable_revision, t.updated_at, "
                "(SELECT MAX(number) FROM revisions r WHERE r.toolbox = t.id) "
                "FROM toolboxes t ORDER BY t.id"
            ).fetchall()
            return c.total_changes, rows  # the generation these rows belong to, exactly

        generation, rows = await self._store.run(q)
        self._listing = (generation, rows)
        return rows

    async def revisions(self, toolbox_id: str) -> list[RevisionRecord]:
        return await self._store.run(
            lambda c: [
                _revision(r)
                for r in c.execute(
                    "SELECT * FROM revisions WHERE toolbox = ? ORDER BY number", (toolbox_id,)
                )
            ]
        )

    async def newest_stable_other_than(
        self, toolbox_id: str, number: int | None
    ) -> RevisionRecord | None:
        def q(c: sqlite3.Connection) -> RevisionRecord | None:
            row = c.execute(
                "SELECT * FROM revisions WHERE toolbox = ? AND stable = 1 AND number != ?"
                " ORDER BY number DESC LIMIT 1",
                (toolbox_id, number or -1),
            ).fetchone()
            return _revision(row) if row else None

        return await self._store.run(q)

    async def update_toolbox(self, toolbox_id: str, **fields: Any) -> None:
        allowed = {"current_revision", "stable_revision", "target_revision", "phase", "stopped"}
        if not fields.keys() <= allowed:
            raise ValueError(f"unknown toolbox fields: {sorted(fields.keys() - allowed)}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        params = [*fields.values(), self._now(), toolbox_id]
        await self._store.run(
            # Column names come from the allowlist above, values are bound parameters.
            lambda c: c.execute(f"UPDATE toolboxes SET {cols}, updated_at = ? WHERE id = ?", params)  # noqa: S608
        )

    async def mark_stable(self, toolbox_id: str, number: int) -> None:
        def q(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE revisions SET stable = 1 WHERE toolbox = ? AND number = ?",
                (toolbox_id, number),
            )
            c.execute(
                "UPDATE toolboxes SET stable_revision = ?, current_revision = ?, "
                "target_revision = CASE WHEN target_revision = ? THEN NULL "
                "ELSE target_revision END, updated_at = ? WHERE id = ?",
                (number, number, number, self._now(), toolbox_id),
            )

        await self._store.run(lambda c: _tx(c, q))

    async def clear_target(self, toolbox_id: str, number: int) -> None:
        """Forget the target if it is still `number` (a newer apply keeps its own). Idempotent."""
        await self._store.run(
            lambda c: c.execute(
                "UPDATE toolboxes SET target_revision = NULL, updated_at = ? "
                "WHERE id = ? AND target_revision = ?",
                (self._now(), toolbox_id, number),
            )
        )

    async def delete_toolbox(self, toolbox_id: str) -> None:
        def q(c: sqlite3.Connection) -> None:
            for table, col in (
                ("toolboxes", "id"),
                ("revisions", "toolbox"),
                ("server_tools", "toolbox"),
                ("server_restarts", "toolbox"),
                ("client_tokens", "toolbox"),  # a toolbox's tokens and calls go with it
                ("tool_calls", "toolbox"),
                ("tool_contracts", "toolbox"),
                ("tool_pins", "toolbox"),
            ):
                c.execute(f"DELETE FROM {table} WHERE {col} = ?", (toolbox_id,))  # noqa: S608

        await self._store.run(lambda c: _tx(c, q))

    # -- discovered tools -------------------------------------------------------------------

    async def set_tools(
        self, toolbox_id: str, server: str, revision: int, tools: list[str]
    ) -> None:
        await self._store.run(
            lambda c: c.execute(
                "INSERT INTO server_tools (toolbox, server, revision, tools) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(toolbox, server) DO UPDATE SET revision = excluded.revision, "
                "tools = excluded.tools",
                (toolbox_id, server, revision, json.dumps(tools)),
            )
        )

    async def tools(self, toolbox_id: str) -> dict[str, tuple[int, list[str]]]:
        def q(c: sqlite3.Connection) -> dict[str, tuple[int, list[str]]]:
            return {
                r["server"]: (r["revision"], json.loads(r["tools"]))
                for r in c.execute("SELECT * FROM server_tools WHERE toolbox = ?", (toolbox_id,))
            }

        return await self._store.run(q)

    # -- operations ---------------------------------------------------------------------------

    async def add_operation(
        self,
        op_id: str,
        kind: str,
        toolbox_id: str,
        revision: int | None,
        params: dict[str, Any] | None = None,
    ) -> OperationRecord:
        now = self._now()
        await self._store.run(
            lambda c: c.execute(
                "INSERT INTO operations (id, kind, toolbox, state, revision, params, created_at, "
                "updated_at) VALUES (?, ?, ?, 'running', ?, ?, ?, ?)",
                (op_id, kind, toolbox_id, revision, json.dumps(params or {}), now, now),
            )
        )
        return OperationRecord(
            op_id, kind, toolbox_id, "running", revision, None, params or {}, now, now
        )

    async def finish_operation(
        self, op_id: str, state: str, error: str | None = None, revision: int | None = None
    ) -> None:
        await self._store.run(
            lambda c: c.execute(
                "UPDATE operations SET state = ?, error = ?, revision = COALESCE(?, revision), "
                "updated_at = ? WHERE id = ?",
                (state, error, revision, self._now(), op_id),
            )
        )

    async def operation(self, op_id: str) -> OperationRecord | None:
        def q(c: sqlite3.Connection) -> OperationRecord | None:
            row = c.execute("SELECT * FROM operations WHERE id = ?", (op_id,)).fetchone()
            return _operation(row) if row else None

        return await self._store.run(q)

    async def running_operations(self) -> list[OperationRecord]:
        return await self._store.run(
            lambda c: [
                _operation(r)
                for r in c.execute(
                    "SELECT * FROM operations WHERE state = 'running' ORDER BY created_at"
                )
            ]
        )

    # -- events -------------------------------------------------------------------------------

    async def append_event(
        self,
        kind: str,
        *,
        toolbox: str | None = None,
        server: str | None = None,
        revision: int | None = None,
        operation: str | None = None,
        reason: str = "",
        message: str = "",
    ) -> EventRecord:
        ts = self._now()

        def q(c: sqlite3.Connection) -> EventRecord:
            cur = c.execute(
                "INSERT INTO events (ts, kind, toolbox, server, revision, operation, reason, "
                "message) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (ts, kind, toolbox, server, revision, operation, reason, message),
            )
            return EventRecord(
                int(cur.lastrowid or 0),
                ts,
                kind,
                toolbox,
                server,
                revision,
                operation,
                reason,
                message,
            )

        return await self._store.run(q)

    async def events(
        self, since: int = 0, toolbox: str | None = None, limit: int = 500
    ) -> list[EventRecord]:
        def q(c: sqlite3.Connection) -> list[EventRecord]:
            sql = "SELECT * FROM events WHERE cursor > ?"
            params: list[Any] = [since]
            if toolbox is not None:
                sql += " AND toolbox = ?"
                params.append(toolbox)
            sql += " ORDER BY cursor LIMIT ?"
            params.append(limit)
            return [_event(r) for r in c.execute(sql, params)]

        return await self._store.run(q)


def _toolbox(r: sqlite3.Row) -> ToolboxRecord:
    return ToolboxRecord(
        r["id"],
        r["current_revision"],
        r["stable_revision"],
        r["target_revision"],
        r["phase"],
        bool(r["stopped"]),
        r["created_at"],
        r["updated_at"],
    )


def _revision(r: sqlite3.Row) -> RevisionRecord:
    return RevisionRecord(
        r["toolbox"], r["number"], r["spec"], r["spec_hash"], bool(r["stable"]), r["created_at"]
    )


def _operation(r: sqlite3.Row) -> OperationRecord:
    return OperationRecord(
        r["id"],
        r["kind"],
        r["toolbox"],
        r["state"],
        r["revision"],
        r["error"],
        json.loads(r["params"]),
        r["created_at"],
        r["updated_at"],
    )


def _event(r: sqlite3.Row) -> EventRecord:
    return EventRecord(
        r["cursor"],
        r["ts"],
        r["kind"],
        r["toolbox"],
        r["server"],
        r["revision"],
        r["operation"],
        r["reason"],
        r["message"],
    )
