"""Pruning of the events, operations, revisions and tool_calls tables: part of StateRepository.

Deletes run in batches of BATCH rows, one short transaction per batch on the store's thread, so
other reads and writes interleave with a large prune. The rules are in dtma.domain.retention.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from dtma.adapters.state_repo_journals import _tx
from dtma.adapters.state_repo_tokens import CallRecords
from dtma.domain.retention import Pruned, RetentionPolicy, RevisionInfo, revisions_to_prune

BATCH = 5000


class RetentionRecords(CallRecords):
    async def prune(self, policy: RetentionPolicy) -> Pruned:
        """Apply `policy` once. Idempotent; never touches running operations or a protected
        revision. Safe to run beside the agent's other work."""
        now = self._now()
        cutoff = now - policy.max_age
        events = await self._prune_events(cutoff, policy.max_events)
        operations = await self._in_batches(
            lambda c: _finished_operations_to_prune(c, cutoff, policy.max_operations),
            "DELETE FROM operations WHERE id = ? AND state != 'running'",
        )
        revisions = await self._store.run(
            lambda c: _tx(c, lambda tx: _prune_revisions(tx, now, policy))
        )
        calls = await self.prune_calls(cutoff, policy.max_calls)
        return Pruned(events, operations, revisions, calls)

    async def _prune_events(self, cutoff: float, max_events: int) -> int:
        """Events go oldest first: every cursor up to the newest one that is too old or beyond
        the newest `max_events`. The cursor order is what readers page by."""

        def bound(c: sqlite3.Connection) -> int:
            by_age = c.execute("SELECT MAX(cursor) FROM events WHERE ts < ?", (cutoff,)).fetchone()
            by_count = c.execute(
                "SELECT cursor FROM events ORDER BY cursor DESC LIMIT 1 OFFSET ?", (max_events,)
            ).fetchone()
            return max(by_age[0] or 0, by_count[0] if by_count else 0)

        upto = await self._store.run(bound)
        deleted = 0
        while upto:

            def batch(c: sqlite3.Connection) -> int:
                cur = c.execute(
                    "DELETE FROM events WHERE cursor IN (SELECT cursor FROM events "
                    "WHERE cursor <= ? ORDER BY cursor LIMIT ?)",
                    (upto, BATCH),
                )
                return cur.rowcount

            n = await self._store.run(batch)
            deleted += n
            if n < BATCH:
                break
        return deleted

    async def _in_batches(
        self, select: Callable[[sqlite3.Connection], list[str]], delete: str
    ) -> int:
        ids = await self._store.run(select)
        for start in range(0, len(ids), BATCH):
            rows = [(i,) for i in ids[start : start + BATCH]]

            def batch(c: sqlite3.Connection, rows: list[tuple[str]] = rows) -> None:
                _tx(c, lambda tx: tx.executemany(delete, rows))

            await self._store.run(batch)
        return len(ids)


def _finished_operations_to_prune(
    c: sqlite3.Connection, cutoff: float, max_operations: int
) -> list[str]:
    rows = c.execute(
        "SELECT id, updated_at FROM operations WHERE state != 'running' ORDER BY created_at DESC"
    ).fetchall()
    return [r["id"] for i, r in enumerate(rows) if i >= max_operations or r["updated_at"] < cutoff]


def _prune_revisions(c: sqlite3.Connection, now: float, policy: RetentionPolicy) -> int:
    deleted = 0
    toolboxes = {r["id"]: r for r in c.execute("SELECT * FROM toolboxes")}
    by_toolbox: dict[str, list[RevisionInfo]] = {}
    for r in c.execute("SELECT toolbox, number, stable, created_at FROM revisions"):
        by_toolbox.setdefault(r["toolbox"], []).append(
            RevisionInfo(r["number"], bool(r["stable"]), r["created_at"])
        )
    # A queued or running operation's revision stays too (its rollout has not started yet).
    in_use = {
        (r["toolbox"], r["revision"])
        for r in c.execute(
            "SELECT toolbox, revision FROM operations WHERE state = 'running' "
            "AND revision IS NOT NULL"
        )
    }
    for toolbox, revisions in by_toolbox.items():
        tb = toolboxes.get(toolbox)
        if tb is None:
            continue  # revisions without a toolbox row: leave them to delete_toolbox
        doomed = revisions_to_prune(
            revisions,
            current=tb["current_revision"],
            target=tb["target_revision"],
            stable=tb["stable_revision"],
            now=now,
            policy=policy,
        )
        doomed = [n for n in doomed if (toolbox, n) not in in_use]
        c.executemany(
            "DELETE FROM revisions WHERE toolbox = ? AND number = ?",
            [(toolbox, n) for n in doomed],
        )
        deleted += len(doomed)
    return deleted
