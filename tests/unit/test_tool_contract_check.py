"""engine/tool_contracts.py with hand-written fakes: what is compared with what, what is
recorded, and when the gate's decision changes."""

from __future__ import annotations

from typing import Any

from dtma.domain import tool_contract as tc
from dtma.domain.gate import Decision, GateState
from dtma.engine.tool_contracts import MAX_EVENTS, check_tool_contracts
from dtma.spec.models import ToolboxSpec
from tests.fakes_gateway import FakeContractHost, FakeContractRunner

PASSED = Decision(GateState.PASSED, "gate_passed")
ECHO = {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {}}}}
ADD = {"name": "add", "inputSchema": {"type": "object", "properties": {"a": {}, "b": {}}}}


def spec(*names: str, mode: str = "warn") -> ToolboxSpec:
    servers = [{"name": n, "image": "dtma-examples/mcp-kit:latest"} for n in names]
    return ToolboxSpec.model_validate({"servers": servers, "rollout": {"tool_contract": mode}})


def runners(**tools: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {name: FakeContractRunner(name, defs) for name, defs in tools.items()}


def record(host: FakeContractHost, revision: int, **tools: list[dict[str, Any]]) -> None:
    for server, defs in tools.items():
        contract = tc.contract_of(defs)
        host.saved.setdefault(revision, {})[server] = (tc.contract_hash(contract), contract)


async def check(
    host: FakeContractHost,
    new: dict[str, Any],
    *names: str,
    mode: str = "warn",
    old: tuple[int | None, dict[str, Any]] = (1, {}),
    decision: Decision = PASSED,
    rollback: bool = False,
) -> Decision:
    return await check_tool_contracts(
        host,  # type: ignore[arg-type]
        spec(*names, mode=mode),
        2,
        new,
        old,
        decision,
        is_rollback=rollback,
    )


async def test_a_first_revision_is_recorded_and_not_judged() -> None:
    host = FakeContractHost()
    got = await check(host, runners(kit=[ECHO, ADD]), "kit", old=(None, {}))
    assert got is PASSED
    assert host.events == []
    assert set(host.saved[2]["kit"][1]) == {"echo", "add"}


async def test_warn_reports_each_removed_tool_and_keeps_the_decision() -> None:
    host = FakeContractHost()
    record(host, 1, kit=[ECHO, ADD])
    got = await check(host, runners(kit=[ECHO]), "kit")
    assert got is PASSED
    assert [(e["kind"], e["server"], e["reason"]) for e in host.events] == [
        ("tool_contract_broken", "kit", tc.TOOL_REMOVED)
    ]
    assert host.events[0]["message"] == "server kit: tool add: tool removed (revision 1 -> 2)"
    assert set(host.saved[2]["kit"][1]) == {"echo"}


async def test_strict_fails_the_gate_and_records_nothing() -> None:
    host = FakeContractHost()
    record(host, 1, kit=[ECHO, ADD])
    got = await check(host, runners(kit=[ECHO]), "kit", mode="strict")
    assert got.state is GateState.FAILED
    assert got.reason == tc.TOOL_CONTRACT
    assert got.server == "kit"
    assert got.detail == "breaks the tool contract of revision 1: tool add: tool removed"
    assert 2 not in host.saved


async def test_a_server_removed_from_the_spec_removes_its_tools() -> None:
    host = FakeContractHost()
    record(host, 1, kit=[ECHO], old=[ECHO, ADD])
    got = await check(host, runners(kit=[ECHO]), "kit", mode="strict")
    assert got.state is GateState.FAILED
    assert [(e["server"], e["message"]) for e in host.events] == [
        ("old", "server old: tool add: tool removed (revision 1 -> 2)"),
        ("old", "server old: tool echo: tool removed (revision 1 -> 2)"),
    ]


async def test_an_unreadable_server_is_left_out_of_check_and_record() -> None:
    host = FakeContractHost()
    record(host, 1, kit=[ECHO, ADD], pipe=[ECHO])
    got = await check(host, runners(kit=[ECHO, ADD], pipe=None), "kit", "pipe", mode="strict")
    assert got is PASSED
    assert host.events == []
    assert set(host.saved[2]) == {"kit"}


async def test_without_a_record_the_old_revision_s_serving_runners_are_the_baseline() -> None:
    host = FakeContractHost()
    old = {
        "kit": FakeContractRunner("kit", [ECHO, ADD]),
        "gone": FakeContractRunner("gone", [ADD], serving=False),  # not serving: not read
    }
    got = await check(host, runners(kit=[ECHO]), "kit", mode="strict", old=(1, old))
    assert got.state is GateState.FAILED
    assert [e["message"] for e in host.events] == [
        "server kit: tool add: tool removed (revision 1 -> 2)"
    ]


async def test_rollbacks_and_failed_gates_are_not_judged() -> None:
    host = FakeContractHost()
    record(host, 1, kit=[ECHO, ADD])
    got = await check(host, runners(kit=[ECHO]), "kit", mode="strict", rollback=True)
    assert got is PASSED
    assert host.events == []
    assert 2 in host.saved  # a rollback target is recorded
    failed = Decision(GateState.FAILED, "deadline_exceeded", "kit", "x")
    host = FakeContractHost()
    record(host, 1, kit=[ECHO, ADD])
    assert await check(host, runners(kit=[ECHO]), "kit", decision=failed) is failed
    assert host.events == []
    assert 2 not in host.saved


async def test_events_are_bounded() -> None:
    host = FakeContractHost()
    many = [{"name": f"t{i}", "inputSchema": {}} for i in range(MAX_EVENTS + 5)]
    record(host, 1, kit=many)
    await check(host, runners(kit=[]), "kit")
    assert len(host.events) == MAX_EVENTS + 1
    assert host.events[-1]["message"] == "5 more breaking changes not listed"
