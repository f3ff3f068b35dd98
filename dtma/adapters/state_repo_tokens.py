"""Client tokens and the tool-call journal: parts of StateRepository kept apart by
responsibility. Each method is one short transaction on the store's thread.

Tokens are stored by hash only (domain/access.py); calls carry sizes, never arguments or results.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from dtma.adapters.state_repo_journals import _Rows, _tx
from dtma.domain.access import ClientToken, ToolCall

BATCH = 5000


class TokenRecords(_Rows):
    async def add_token(
        self, token_id: str, toolbox: str, name: str, digest: str, limit: int
    ) -> ClientToken | None:
        """Store a token of an existing toolbox. None if the toolbox is unknown; raises
        OverflowError when it already has `limit` tokens."""
        now = self._now()

        def q(c: sqlite3.Connection) -> ClientToken | None:
            if c.execute("SELECT 1 FROM toolboxes WHERE id = ?", (toolbox,)).fetchone() is None:
                return None
            count = c.execute(
                "SELECT COUNT(*) FROM client_tokens WHERE toolbox = ?", (toolbox,)
            ).fetchone()[0]
            if count >= limit:
                raise OverflowError(limit)
            c.execute(
                "INSERT INTO client_tokens (id, toolbox, name, hash, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (token_id, toolbox, name, digest, now),
            )
            return ClientToken(token_id, toolbox, name, now, None)

        return await self._store.run(lambda c: _tx(c, q))

    async def client_tokens(self, toolbox: str | None = None) -> list[ClientToken]:
        """One toolbox's tokens (all when None), oldest first."""

        def q(c: sqlite3.Connection) -> list[ClientToken]:
            sql = "SELECT * FROM client_tokens"
            rows = (
                c.execute(sql + " WHERE toolbox = ? ORDER BY created_at, id", (toolbox,))
                if toolbox is not None
                else c.execute(sql + " ORDER BY created_at, id")
            )
            return [_token(r) for r in rows]

        return await self._store.run(q)

    async def token_hashes(self) -> list[tuple[str, str, str]]:
        """(hash, id, toolbox) of every token: what the agent loads at start."""
        return await self._store.run(
            lambda c: [
                (r["hash"], r["id"], r["toolbox"])
                for r in c.execute("SELECT hash, id, toolbox FROM client_tokens")
            ]
        )

    async def delete_token(self, toolbox: str, token_id: str) -> bool:
        def q(c: sqlite3.Connection) -> bool:
            cur = c.execute(
                "DELETE FROM client_tokens WHERE toolbox = ? AND id = ?", (toolbox, token_id)
            )
            return cur.rowcount > 0

        return await self._store.run(q)

    async def touch_tokens(self, last_used: Mapping[str, float]) -> None:
        """Record when tokens were last used (batched by the caller)."""
        rows = [(ts, token_id) for token_id, ts in last_used.items()]
        if rows:
            await self._store.run(
                lambda c: _tx(
                    c,
                    lambda tx: tx.executemany(
                        "UPDATE client_tokens SET last_used = MAX(COALESCE(last_used, 0), ?) "
                        "WHERE id = ?",
                        rows,
                    ),
                )
            )


class CallRecords(_Rows):
    async def append_calls(self, calls: Sequence[ToolCall]) -> None:
        """Append a batch in one transaction."""
        rows = [
            (
                k.ts,
                k.toolbox,
                k.server,
                k.tool,
                k.token,
                k.duration,
                k.outcome,
                k.request_bytes,
                k.response_bytes,
                k.subject,
                k.issuer,
            )
            for k in calls
        ]
        if rows:
            await self._store.run(
                lambda c: _tx(
                    c,
                    lambda tx: tx.executemany(
                        "INSERT INTO tool_calls (ts, toolbox, server, tool, token, duration, "
                        "outcome, request_bytes, response_bytes, subject, issuer) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        rows,
                    ),
                )
            )

    async def calls(self, toolbox: str, since: int, limit: int) -> list[dict[str, object]]:
        """A page of one toolbox's calls after cursor `since`, oldest first."""
        return await self._store.run(
            lambda c: [
                dict(r)
                for r in c.execute(
                    "SELECT * FROM tool_calls WHERE toolbox = ? AND cursor > ? "
                    "ORDER BY cursor LIMIT ?",
                    (toolbox, since, limit),
                )
            ]
        )

    async def prune_calls(self, cutoff: float, max_calls: int) -> int:
        """Drop calls older than `cutoff` or beyond the newest `max_calls` (all toolboxes),
        oldest first, in batches. Idempotent."""

        def bound(c: sqlite3.Connection) -> int:
            by_age = c.execute("SELECT MAX(cursor) FROM tool_calls WHERE ts < ?", (cutoff,))
            by_count = c.execute(
                "SELECT cursor FROM tool_calls ORDER BY cursor DESC LIMIT 1 OFFSET ?", (max_calls,)
            ).fetchone()
            return max(by_age.fetchone()[0] or 0, by_count[0] if by_count else 0)

        upto = await self._store.run(bound)
        deleted = 0
        while upto:
            n = await self._store.run(
                lambda c: (
                    c.execute(
                        "DELETE FROM tool_calls WHERE cursor IN (SELECT cursor FROM tool_calls "
                        "WHERE cursor <= ? ORDER BY cursor LIMIT ?)",
                        (upto, BATCH),
                    ).rowcount
                )
            )
            deleted += n
            if n < BATCH:
                break
        return deleted


def _token(r: sqlite3.Row) -> ClientToken:
    return ClientToken(r["id"], r["toolbox"], r["name"], r["created_at"], r["last_used"])
