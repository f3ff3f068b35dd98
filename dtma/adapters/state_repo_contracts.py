"""Tool contracts per server per revision: part of StateRepository, kept apart by
responsibility. Written when a revision's gate passes; read as the baseline of the next rollout.
A contract holds tool names and input schemas only, never argument values. Pins (digests of
each tool's description and schema, domain/tool_pins.py) are written once per revision and server
and never replaced: only a new revision's gate accepts new definitions."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from dtma.adapters.state_repo_journals import _Rows, _tx
from dtma.domain.tool_pins import Pins


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

    async def save_tool_pins(
        self, toolbox_id: str, revision: int, pins: Mapping[str, Pins]
    ) -> None:
        """Record `server -> pins` for one revision where none are recorded yet (a re-gate of the
        same revision, a rollback to it or crash recovery keeps the first ones), and drop the
        pins of revisions that no longer exist. Idempotent; one transaction."""
        now = self._now()

        def q(c: sqlite3.Connection) -> None:
            for server, server_pins in pins.items():
                c.execute(
                    "INSERT INTO tool_pins (toolbox, revision, server, pins, created_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(toolbox, revision, server) DO NOTHING",
                    (toolbox_id, revision, server, json.dumps(server_pins), now),
                )
            c.execute(
                "DELETE FROM tool_pins WHERE toolbox = ? AND revision NOT IN "
                "(SELECT number FROM revisions WHERE toolbox = ?)",
                (toolbox_id, toolbox_id),
            )

        await self._store.run(lambda c: _tx(c, q))

    async def tool_pins(self, toolbox_id: str, revision: int) -> dict[str, Pins]:
        """`server -> pins` recorded for one revision; empty when none were."""

        def q(c: sqlite3.Connection) -> dict[str, Pins]:
            rows = c.execute(
                "SELECT server, pins FROM tool_pins WHERE toolbox = ? AND revision = ?",
                (toolbox_id, revision),
            )
            return {r["server"]: json.loads(r["pins"]) for r in rows}

        return await self._store.run(q)
