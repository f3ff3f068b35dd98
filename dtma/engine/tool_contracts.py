"""The tool-contract check of a rollout (issue 11, item 7; `rollout.tool_contract`).

Called once per rollout, by the executor's StartAndGate step (engine/executor.py), right after
the group gate has passed and before the new revision is committed. It reads each new server's
tools (over the session the agent already holds), compares them with the serving revision's
recorded contract (domain/tool_contract.py), emits one `tool_contract_broken` event per breaking
change, and with `strict` turns the passed gate into a failed one (reason `tool_contract`),
which the rollout then reverts like any failed gate. When the gate (still) passes, the new
revision's contracts are recorded as the baseline of the next rollout, and its tool definitions
are pinned (domain/tool_pins.py; enforced by the endpoint, gateway/pinning.py). Pins are written
once per revision: a rollback or a re-gate of the same revision keeps the first ones.

The baseline is what was recorded for the serving revision, or, for a revision that passed
before contracts were recorded (an older agent, or one kept by crash recovery), the live tools
of its servers that still serve (start_first). A server whose tools cannot be read (no MCP
session, `health.mcp: false`) is left out of both the check and the record. A server removed
from the spec removes its tools, so it counts as removing each of them. Rollbacks are never
checked (they return to a revision that passed before), only recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

import structlog

from dtma.domain import tool_contract as tc
from dtma.domain import tool_pins as tp
from dtma.domain.gate import Decision, GateState
from dtma.engine import event_kinds as ev
from dtma.engine.server_runner import ServerRunner
from dtma.ports import ContractStore, Recorded
from dtma.spec.models import ToolboxSpec

log = structlog.get_logger(__name__)

READ_TIMEOUT_S = 10.0
MAX_EVENTS = 20  # events per rollout; the rest are counted in one more


class ContractHost(Protocol):
    """What the check needs of its toolbox (ToolboxRunner is one)."""

    id: str

    @property
    def repo(self) -> ContractStore: ...

    async def emit(
        self,
        kind: str,
        *,
        server: str | None = None,
        revision: int | None = None,
        reason: str = "",
        message: str = "",
        operation: str | None = None,
    ) -> None: ...


async def check_tool_contracts(
    tb: ContractHost,
    spec: ToolboxSpec,
    revision: int,
    runners: Mapping[str, ServerRunner],
    baseline: tuple[int | None, Mapping[str, ServerRunner]],
    decision: Decision,
    *,
    is_rollback: bool,
) -> Decision:
    """The gate's decision after the contract check: `decision` unchanged unless it passed and
    `strict` refuses a breaking change. `baseline` is (serving revision, its runners). Records
    the new contracts when the result passes. Cancellable; never raises for a server that does
    not answer (it is left out)."""
    if decision.state is not GateState.PASSED:
        return decision
    store = tb.repo
    contracts, pins = await _read_all(runners)
    old_rev, old_runners = baseline
    if not is_rollback and old_rev is not None and old_rev != revision:
        old = (
            await store.tool_contracts(tb.id, old_rev)
            or (await _read_all({n: r for n, r in old_runners.items() if r.serving}))[0]
        )
        breaks = _breaks(old, contracts, spec)
        if breaks:
            await _report(tb, breaks, old_rev, revision)
            if spec.rollout.tool_contract == "strict":
                server, first = breaks[0]
                more = f" and {len(breaks) - 1} more" if len(breaks) > 1 else ""
                return Decision(
                    GateState.FAILED,
                    tc.TOOL_CONTRACT,
                    server,
                    f"breaks the tool contract of revision {old_rev}: {first.describe()}{more}",
                )
    if contracts:
        await store.save_tool_contracts(tb.id, revision, contracts)
    if pins:
        await store.save_tool_pins(tb.id, revision, pins)
    return decision


async def _read_all(runners: Mapping[str, ServerRunner]) -> tuple[Recorded, dict[str, tp.Pins]]:
    names = list(runners)
    lists = await asyncio.gather(
        *(runners[n].tool_defs(READ_TIMEOUT_S) for n in names), return_exceptions=True
    )
    found: Recorded = {}
    pins: dict[str, tp.Pins] = {}
    for name, defs in zip(names, lists, strict=True):
        if isinstance(defs, BaseException):
            if not isinstance(defs, Exception):
                raise defs
            log.info("tool_contract_unreadable", server=name, error=type(defs).__name__)
            continue
        contract = tc.contract_of(defs)
        found[name] = (tc.contract_hash(contract), contract)
        pins[name] = tp.pins_of(defs)
    return found, pins


def _breaks(old: Recorded, new: Recorded, spec: ToolboxSpec) -> list[tuple[str, tc.Break]]:
    in_spec = {s.name for s in spec.servers}
    found: list[tuple[str, tc.Break]] = []
    for server in sorted(old):
        old_hash, old_contract = old[server]
        if server in new:
            new_hash, new_contract = new[server]
            if new_hash == old_hash:
                continue
        elif server in in_spec:
            continue  # still there, but its tools could not be read: nothing to judge
        else:
            new_contract = {}  # the server is gone, and its tools with it
        found.extend((server, b) for b in tc.breaking_changes(old_contract, new_contract))
    return found


async def _report(
    tb: ContractHost, breaks: list[tuple[str, tc.Break]], old_rev: int, revision: int
) -> None:
    for server, found in breaks[:MAX_EVENTS]:
        await tb.emit(
            ev.TOOL_CONTRACT_BROKEN,
            server=server,
            revision=revision,
            reason=found.change,
            message=f"server {server}: {found.describe()} (revision {old_rev} -> {revision})",
        )
    if len(breaks) > MAX_EVENTS:
        await tb.emit(
            ev.TOOL_CONTRACT_BROKEN,
            revision=revision,
            reason="more",
            message=f"{len(breaks) - MAX_EVENTS} more breaking changes not listed",
        )
