"""Restart counts and restart windows per server: part of StateRepository, kept apart by
responsibility. What the restart policy needs to survive a crash of the agent."""

from __future__ import annotations

import json
import sqlite3

from dtma.adapters.state_repo_journals import _Rows
from dtma.domain.records import RestartState


class RestartRecords(_Rows):
    async def save_restart_state(self, toolbox_id: str, server: str, state: RestartState) -> None:
        """Replace the saved state of one server. Idempotent; one statement."""
        now = self._now()
        await self._store.run(
            lambda c: c.execute(
                "INSERT INTO server_restarts (toolbox, server, revision, restarts, attempts, "
                "gave_up, pending, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(toolbox, server) DO UPDATE SET revision = excluded.revision, "
                "restarts = excluded.restarts, attempts = excluded.attempts, "
                "gave_up = excluded.gave_up, pending = excluded.pending, "
                "updated_at = excluded.updated_at",
                (
                    toolbox_id,
                    server,
                    state.revision,
                    state.restarts,
                    json.dumps(list(state.attempts)),
                    int(state.gave_up),
                    int(state.pending),
                    now,
                ),
            )
        )

    async def restart_states(self, toolbox_id: str) -> dict[str, RestartState]:
        def q(c: sqlite3.Connection) -> dict[str, RestartState]:
            return {
                r["server"]: RestartState(
                    r["revision"],
                    r["restarts"],
                    tuple(float(t) for t in json.loads(r["attempts"])),
                    bool(r["gave_up"]),
                    bool(r["pending"]),
                )
                for r in c.execute("SELECT * FROM server_restarts WHERE toolbox = ?", (toolbox_id,))
            }

        return await self._store.run(q)
