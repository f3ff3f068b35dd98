"""An in-memory StateStore (dtma/ports.py) with the semantics of adapters/state_repo.py for
what the engine uses: revisions deduplicated against the wanted one, targets, stable marks,
operations, events with cursors, restart states. Each method is atomic (no await inside).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from dtma.domain.records import (
    EventRecord,
    OperationRecord,
    RestartState,
    RevisionRecord,
    ToolboxListing,
    ToolboxRecord,
)
from dtma.domain.retention import Pruned, RetentionPolicy
from dtma.errors import PreconditionFailed

_TOOLBOX_FIELDS = {"current_revision", "stable_revision", "target_revision", "phase", "stopped"}


class FakeStore:
    def __init__(self) -> None:
        self.toolbox_rows: dict[str, ToolboxRecord] = {}
        self.revision_rows: dict[str, list[RevisionRecord]] = {}
        self.operation_rows: dict[str, OperationRecord] = {}
        self.event_rows: list[EventRecord] = []
        self.tool_rows: dict[tuple[str, str], tuple[int, list[str]]] = {}
        self.restart_rows: dict[tuple[str, str], RestartState] = {}
        self.error_rows: list[dict[str, Any]] = []
        self.idempotency: dict[str, tuple[str, int, str]] = {}
        self.contract_rows: dict[tuple[str, int], dict[str, tuple[str, dict[str, Any]]]] = {}
        self.pin_rows: dict[tuple[str, int], dict[str, Any]] = {}

    # -- toolboxes and revisions --------------------------------------------------------------

    async def toolbox(self, toolbox_id: str) -> ToolboxRecord | None:
        return self.toolbox_rows.get(toolbox_id)

    async def toolboxes(self) -> list[ToolboxRecord]:
        return [self.toolbox_rows[k] for k in sorted(self.toolbox_rows)]

    async def add_revision(
        self,
        toolbox_id: str,
        spec_json: str,
        spec_hash: str,
        if_match: int | None = None,
        *,
        retry: bool = False,
    ) -> tuple[RevisionRecord, bool]:
        revs = self.revision_rows.setdefault(toolbox_id, [])
        last = revs[-1] if revs else None
        if if_match is not None and (last is None or last.number != if_match):
            raise PreconditionFailed(f"If-Match {if_match} does not match the newest revision")
        tb = self.toolbox_rows.get(toolbox_id)
        wanted = None
        if tb is not None:
            wanted = tb.target_revision if tb.target_revision is not None else tb.current_revision
        if wanted is not None and not retry:
            row = self._revision(toolbox_id, wanted)
            if row is not None and row.spec_hash == spec_hash:
                return row, False
        now = time.time()
        rev = RevisionRecord(
            toolbox_id, (last.number + 1) if last else 1, spec_json, spec_hash, False, now
        )
        revs.append(rev)
        if tb is None:
            tb = ToolboxRecord(toolbox_id, None, None, None, "deploying", False, now, now)
        self.toolbox_rows[toolbox_id] = replace(tb, target_revision=rev.number, updated_at=now)
        return rev, True

    def _revision(self, toolbox_id: str, number: int) -> RevisionRecord | None:
        return next((r for r in self.revision_rows.get(toolbox_id, []) if r.number == number), None)

    async def revision(self, toolbox_id: str, number: int) -> RevisionRecord | None:
        return self._revision(toolbox_id, number)

    async def latest_revision(self, toolbox_id: str) -> RevisionRecord | None:
        revs = self.revision_rows.get(toolbox_id)
        return revs[-1] if revs else None

    async def listing(self) -> list[ToolboxListing]:
        return [
            (t.id, t.phase, t.stable_revision, t.updated_at, await self._newest(t.id))
            for t in await self.toolboxes()
        ]

    async def _newest(self, toolbox_id: str) -> int | None:
        latest = await self.latest_revision(toolbox_id)
        return latest.number if latest else None

    async def revisions(self, toolbox_id: str) -> list[RevisionRecord]:
        return list(self.revision_rows.get(toolbox_id, []))

    async def newest_stable_other_than(
        self, toolbox_id: str, number: int | None
    ) -> RevisionRecord | None:
        stable = [
            r for r in self.revision_rows.get(toolbox_id, []) if r.stable and r.number != number
        ]
        return stable[-1] if stable else None

    async def update_toolbox(self, toolbox_id: str, **fields: Any) -> None:
        if not fields.keys() <= _TOOLBOX_FIELDS:
            raise ValueError(f"unknown toolbox fields: {sorted(fields.keys() - _TOOLBOX_FIELDS)}")
        tb = self.toolbox_rows.get(toolbox_id)
        if tb is not None:  # an UPDATE of a missing row changes nothing
            if "stopped" in fields:
                fields["stopped"] = bool(fields["stopped"])
            self.toolbox_rows[toolbox_id] = replace(tb, **fields, updated_at=time.time())

    async def mark_stable(self, toolbox_id: str, number: int) -> None:
        revs = self.revision_rows.get(toolbox_id, [])
        self.revision_rows[toolbox_id] = [
            replace(r, stable=True) if r.number == number else r for r in revs
        ]
        tb = self.toolbox_rows.get(toolbox_id)
        if tb is not None:
            target = None if tb.target_revision == number else tb.target_revision
            self.toolbox_rows[toolbox_id] = replace(
                tb, stable_revision=number, current_revision=number, target_revision=target
            )

    async def clear_target(self, toolbox_id: str, number: int) -> None:
        tb = self.toolbox_rows.get(toolbox_id)
        if tb is not None and tb.target_revision == number:
            self.toolbox_rows[toolbox_id] = replace(tb, target_revision=None)

    async def delete_toolbox(self, toolbox_id: str) -> None:
        self.toolbox_rows.pop(toolbox_id, None)
        self.revision_rows.pop(toolbox_id, None)
        for key in [k for k in self.tool_rows if k[0] == toolbox_id]:
            del self.tool_rows[key]
        for rkey in [k for k in self.restart_rows if k[0] == toolbox_id]:
            del self.restart_rows[rkey]
        for ckey in [k for k in self.contract_rows if k[0] == toolbox_id]:
            del self.contract_rows[ckey]
        for pkey in [k for k in self.pin_rows if k[0] == toolbox_id]:
            del self.pin_rows[pkey]

    # -- tools and restarts -------------------------------------------------------------------

    async def set_tools(
        self, toolbox_id: str, server: str, revision: int, tools: list[str]
    ) -> None:
        self.tool_rows[(toolbox_id, server)] = (revision, list(tools))

    async def tools(self, toolbox_id: str) -> dict[str, tuple[int, list[str]]]:
        return {s: v for (t, s), v in self.tool_rows.items() if t == toolbox_id}

    async def save_restart_state(self, toolbox_id: str, server: str, state: RestartState) -> None:
        self.restart_rows[(toolbox_id, server)] = state

    async def restart_states(self, toolbox_id: str) -> dict[str, RestartState]:
        return {s: v for (t, s), v in self.restart_rows.items() if t == toolbox_id}

    async def tool_contracts(
        self, toolbox_id: str, revision: int
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        return dict(self.contract_rows.get((toolbox_id, revision), {}))

    async def save_tool_contracts(
        self, toolbox_id: str, revision: int, contracts: Mapping[str, tuple[str, dict[str, Any]]]
    ) -> None:
        self.contract_rows[(toolbox_id, revision)] = dict(contracts)

    async def tool_pins(self, toolbox_id: str, revision: int) -> dict[str, Any]:
        return dict(self.pin_rows.get((toolbox_id, revision), {}))

    async def save_tool_pins(self, toolbox_id: str, revision: int, pins: Mapping[str, Any]) -> None:
        rows = self.pin_rows.setdefault((toolbox_id, revision), {})
        for server, server_pins in pins.items():
            rows.setdefault(server, server_pins)  # first pins win, as in the real store

    # -- operations and events ----------------------------------------------------------------

    async def add_operation(
        self,
        op_id: str,
        kind: str,
        toolbox_id: str,
        revision: int | None,
        params: dict[str, Any] | None = None,
    ) -> OperationRecord:
        now = time.time()
        op = OperationRecord(
            op_id, kind, toolbox_id, "running", revision, None, params or {}, now, now
        )
        self.operation_rows[op_id] = op
        return op

    async def finish_operation(
        self, op_id: str, state: str, error: str | None = None, revision: int | None = None
    ) -> None:
        op = self.operation_rows.get(op_id)
        if op is not None:
            self.operation_rows[op_id] = replace(
                op,
                state=state,
                error=error,
                revision=revision if revision is not None else op.revision,
            )

    async def operation(self, op_id: str) -> OperationRecord | None:
        return self.operation_rows.get(op_id)

    async def running_operations(self) -> list[OperationRecord]:
        return [o for o in self.operation_rows.values() if o.state == "running"]

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
        event = EventRecord(
            len(self.event_rows) + 1,
            time.time(),
            kind,
            toolbox,
            server,
            revision,
            operation,
            reason,
            message,
        )
        self.event_rows.append(event)
        return event

    async def events(
        self, since: int = 0, toolbox: str | None = None, limit: int = 500
    ) -> list[EventRecord]:
        rows = [e for e in self.event_rows if e.cursor > since and toolbox in (None, e.toolbox)]
        return rows[:limit]

    # -- the API's tables (kept simple: the engine's decisions do not read them) -------------

    async def errors(
        self,
        *,
        toolbox: str | None = None,
        category: str | None = None,
        resolved: bool | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        return [e for e in self.error_rows if toolbox in (None, e.get("toolbox"))][:limit]

    async def idempotent_response(self, key: str) -> tuple[str, int, str] | None:
        return self.idempotency.get(key)

    async def store_idempotent_response(
        self, key: str, fingerprint: str, status: int, body: str, keep_seconds: float
    ) -> None:
        self.idempotency[key] = (fingerprint, status, body)

    async def prune(self, policy: RetentionPolicy) -> Pruned:
        return Pruned(0, 0, 0)

    # -- for assertions -----------------------------------------------------------------------

    def kinds(self, toolbox: str | None = None) -> list[str]:
        return [e.kind for e in self.event_rows if toolbox in (None, e.toolbox)]


class FailingStore(FakeStore):
    """A FakeStore whose next `fail_updates` toolbox updates raise OSError (a store that is
    briefly failing); set it to a large number for an always-failing store."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_updates = 0

    async def update_toolbox(self, toolbox_id: str, **fields: Any) -> None:
        if self.fail_updates > 0:
            self.fail_updates -= 1
            raise OSError("disk I/O error")
        await super().update_toolbox(toolbox_id, **fields)
