"""The endpoint's side of tool pinning (`gateway.pin: off|warn|block`, issue 20, item 4).

A serving server's listed tools are compared with the pins its revision recorded at the gate
(engine/tool_contracts.py, domain/tool_pins.py). Under `block` a changed or new tool is not
offered and calls to it are refused (ToolDefinitionChanged, a permanent error: retrying does not
help, only a new revision does); under `warn` it is offered; under `off` nothing is compared.
Each changed definition emits one `tool_definition_changed` event (reason `pinned` or `warned`)
per agent process, which the metrics observer counts in `dtma_tool_definition_changes_total`.

Pins are read from the state DB once per (toolbox, revision) and cached here, so an agent restart
or a container restart keeps them. A revision that has no pins for a server (it passed its gate
before pins were recorded, or its tools could not be read then) pins what the server lists the
first time it is asked, and records that: trust on first use, once.

Concurrency: event loop only. Holds a cache and the set of changes already reported; both are
bounded by the toolboxes' serving revisions (entries of other revisions are dropped on load).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dtma.domain import tool_pins as tp
from dtma.engine import event_kinds as ev
from dtma.engine.server_runner import ServerRunner
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.errors import DtmaError


class ToolDefinitionChanged(DtmaError):
    """The tool's definition changed since its revision's gate and `gateway.pin` is `block`."""

    code = "tool_definition_changed"


def policy_of(tb: ToolboxRunner) -> tp.Policy:
    gateway = tb.spec.gateway if tb.spec is not None else None
    return gateway.pin if gateway is not None else "block"


class PinGuard:
    """Compares listings with pins, reports changes, and says which tools to withhold."""

    def __init__(self, toolboxes: Mapping[str, ToolboxRunner] | None = None) -> None:
        """`toolboxes`: the agent's live runners, so that a deleted toolbox's entries go."""
        self._toolboxes = toolboxes
        self._pins: dict[tuple[str, int], dict[str, tp.Pins]] = {}
        self._reported: set[tuple[str, int, str, str, str]] = set()
        # The last answer per server, for the very list object it was computed from (a cached
        # tools/list is the same object until it is read again): a call pays no digests.
        self._last: dict[tuple[str, int, str], tuple[list[dict[str, Any]], dict[str, str]]] = {}

    async def withheld(
        self, tb: ToolboxRunner, runner: ServerRunner, defs: list[dict[str, Any]]
    ) -> dict[str, str]:
        """tool -> change, for the tools of `defs` that must not be offered or called (empty
        unless the policy is `block`). Reports each new change once. Cancellable."""
        policy = policy_of(tb)
        if policy == "off":
            return {}
        last = self._last.get((tb.id, runner.revision, runner.name))
        if last is not None and last[0] is defs:
            return last[1]
        withheld = await self._compare(tb, runner, defs, policy)
        self._last[(tb.id, runner.revision, runner.name)] = (defs, withheld)
        return withheld

    def last_withheld(self, tb: ToolboxRunner, runner: ServerRunner) -> frozenset[str]:
        """The tools the last comparison withheld (no I/O): what the endpoint's list-changed
        watch leaves out of its signature, so clients hear that a tool went away."""
        last = self._last.get((tb.id, runner.revision, runner.name))
        return frozenset(last[1]) if last is not None else frozenset()

    async def _compare(
        self, tb: ToolboxRunner, runner: ServerRunner, defs: list[dict[str, Any]], policy: str
    ) -> dict[str, str]:
        pinned = await self._pinned(tb, runner, defs)
        changes = tp.pin_changes(pinned, defs)
        if not changes:
            return {}
        reason = tp.PINNED if policy == "block" else tp.WARNED
        by_name = {str(d.get("name")): d for d in defs}
        for tool, change in sorted(changes.items()):
            key = (tb.id, runner.revision, runner.name, tool, tp.change_key(by_name[tool]))
            if key in self._reported:
                continue
            self._reported.add(key)
            done = "not offered, calls refused" if policy == "block" else "still offered"
            await tb.emit(
                ev.TOOL_DEFINITION_CHANGED,
                server=runner.name,
                revision=runner.revision,
                reason=reason,
                message=(
                    f"server {runner.name}: tool {tool}: {change.replace('_', ' ')} since the "
                    f"gate of revision {runner.revision} ({done}; gateway.pin: {policy})"
                )[:500],
            )
        return changes if policy == "block" else {}

    async def _pinned(
        self, tb: ToolboxRunner, runner: ServerRunner, defs: list[dict[str, Any]]
    ) -> Mapping[str, Mapping[str, str]]:
        key = (tb.id, runner.revision)
        recorded = self._pins.get(key)
        if recorded is None or runner.name not in recorded:
            recorded = await tb.repo.tool_pins(tb.id, runner.revision)
            if runner.name not in recorded:
                await tb.repo.save_tool_pins(
                    tb.id, runner.revision, {runner.name: tp.pins_of(defs)}
                )
                recorded = await tb.repo.tool_pins(tb.id, runner.revision)
            self._forget_other_revisions(tb)
            self._pins[key] = recorded
        return recorded.get(runner.name, {})

    def _forget_other_revisions(self, tb: ToolboxRunner) -> None:
        """Drop what belongs to revisions `tb` no longer serves, and to deleted toolboxes."""
        serving = {r.revision for r in tb.servers.values()}
        live = self._toolboxes

        def stale(toolbox: str, revision: int) -> bool:
            if toolbox == tb.id:
                return revision not in serving
            return live is not None and toolbox not in live

        for key in [k for k in self._pins if stale(*k)]:
            del self._pins[key]
        self._reported = {r for r in self._reported if not stale(r[0], r[1])}
        for last in [k for k in self._last if stale(k[0], k[1])]:
            del self._last[last]
