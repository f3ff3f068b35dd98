"""Tool contracts per server per revision: part of StateRepository, kept apart by
responsibility. Written when a revision's gate passes; read as the baseline of the next rollout.
A contract holds tool names and input schemas only, never argument values."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from dtma.adapters.state_repo_journals import _Rows, _tx


class ContractRecords(_Rows):
    async def save_tool_contracts(
        self, toolbox_id: str, revision: int, contracts: Mapping[str, tuple[str, dict[str, Any]]]
    ) -> None:
        """Record `server -> (hash, contract)` for one revision, replacing what it had, and drop
        the contracts of revisions that no longer exist (pruned). Idempotent; one transaction."""
        now = self._now()

        def q(c: sqlite3.Connection) -> None:
            for server, (digest, contract) in contracts.items():
                c.execute(
                    "INSERT INTO tool_contracts (toolbox, revision, server, hash, contract, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(toolbox, revision, server) DO UPDATE SET hash = excluded.hash, "
                    "contract = excluded.contract, created_at = excluded.created_at",
                    (toolbox_id, revision, server, digest, json.dumps(contract), now),
                )
            c.execute(
                "DELETE FROM tool_contracts WHERE toolbox = ? AND revision NOT IN "
                "(SELECT number FROM revisions WHERE toolbox = ?)",
                (toolbox_id, toolbox_id),
            )

        await self._store.run(lambda c: _tx(c, q))

    async def tool_contracts(
        self, toolbox_id: str, revision: int
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        """`server -> (hash, contract)` recorded for one revision; empty when none was."""

        def q(c: sqlite3.Connection) -> dict[str, tuple[str, dict[str, Any]]]:
            rows = c.execute(
                "SELECT server, hash, contract FROM tool_contracts "
                "WHERE toolbox = ? AND revision = ?",
                (toolbox_id, revision),
            )
            return {r["server"]: (r["hash"], json.loads(r["contract"])) for r in rows}

        return await self._store.run(q)
