"""The rollout planner and outcome table: pure, no Docker, no asyncio."""

from __future__ import annotations

import itertools

import pytest

from dtma.domain.rollout_plan import (
    FAILED,
    ROLLED_BACK,
    SUCCEEDED,
    Announce,
    ClearTarget,
    Commit,
    MarkStable,
    Order,
    RemoveRevision,
    RemoveServers,
    ReportGate,
    RestoreStopped,
    RotateServer,
    Serving,
    StartAndGate,
    StopServers,
    outcome,
    plan_cleanup,
    plan_rollout,
    plan_rotation,
)

ORDERS: tuple[Order, ...] = ("start_first", "stop_first")
BOOLS = (False, True)


def test_start_first_starts_beside_what_serves() -> None:
    assert plan_rollout(Serving(2), 3, "start_first", is_rollback=False) == [
        Announce(3, 2, False),
        StartAndGate(3, abortable=True),
    ]


def test_stop_first_stops_what_serves_first() -> None:
    assert plan_rollout(Serving(2), 3, "stop_first", is_rollback=False) == [
        Announce(3, 2, False),
        StopServers(2, "stop_first"),
        StartAndGate(3, abortable=True),
    ]


def test_a_first_rollout_has_nothing_to_stop() -> None:
    assert plan_rollout(None, 1, "stop_first", is_rollback=False) == [
        Announce(1, None, False),
        StartAndGate(1, abortable=True),
    ]


def test_a_rollback_is_not_aborted_by_a_newer_apply() -> None:
    steps = plan_rollout(Serving(3), 2, "start_first", is_rollback=True)
    assert steps[-1] == StartAndGate(2, abortable=False)
    assert steps[0] == Announce(2, 3, True)


def test_steps_carry_their_action_and_are_frozen() -> None:
    step = StopServers(2)
    assert step.action == "stop_servers"
    with pytest.raises(AttributeError):
        step.revision = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("order", "auto_revert", "had_stable", "is_rollback", "superseded"),
    list(itertools.product(ORDERS, BOOLS, BOOLS, BOOLS, BOOLS)),
)
def test_a_passed_gate_commits_and_removes_what_served(
    order: Order, auto_revert: bool, had_stable: bool, is_rollback: bool, superseded: bool
) -> None:
    out = outcome(
        "passed",
        order,
        auto_revert,
        had_stable,
        is_rollback,
        superseded,
        target=3,
        current=2 if had_stable else None,
    )
    assert out.state == SUCCEEDED
    assert out.settles
    expected = (
        (Commit(3), RemoveServers(2, "superseded"), ReportGate(3))
        if had_stable
        else (Commit(3), ReportGate(3))
    )
    assert out.steps == expected
    assert out.if_restore_fails is None


# (had_stable, is_rollback, auto_revert, superseded) -> (state, settles) after a failed gate.
FAILED_TABLE = {
    (False, False, False, False): (FAILED, True),
    (False, False, False, True): (FAILED, False),
    (False, False, True, False): (FAILED, True),
    (False, False, True, True): (FAILED, False),
    (False, True, False, False): (FAILED, True),
    (False, True, False, True): (FAILED, False),
    (False, True, True, False): (FAILED, True),
    (False, True, True, True): (FAILED, False),
    (True, False, False, False): (FAILED, False),
    (True, False, False, True): (FAILED, False),
    (True, False, True, False): (ROLLED_BACK, False),
    (True, False, True, True): (FAILED, False),
    (True, True, False, False): (FAILED, False),
    (True, True, False, True): (FAILED, False),
    (True, True, True, False): (FAILED, False),
    (True, True, True, True): (FAILED, False),
}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(("key", "expected"), list(FAILED_TABLE.items()))
def test_a_failed_gate_removes_the_revision_and_maps_the_result(
    order: Order, key: tuple[bool, bool, bool, bool], expected: tuple[str, bool]
) -> None:
    had_stable, is_rollback, auto_revert, superseded = key
    current = 2 if had_stable else None
    out = outcome(
        "failed",
        order,
        auto_revert,
        had_stable,
        is_rollback,
        superseded,
        target=3,
        current=current,
    )
    assert (out.state, out.settles) == expected
    base = (ReportGate(3), RemoveRevision(3, "rollout_failed"), ClearTarget(3))
    if order == "stop_first" and had_stable:
        assert out.steps == (*base, RestoreStopped(2))
        fallback = out.if_restore_fails
        assert fallback is not None
        assert (fallback.state, fallback.settles) == (FAILED, True)
        assert fallback.note == "; restarting revision 2 failed too"
    else:
        assert out.steps == base
        assert out.if_restore_fails is None


def test_cleanup_after_the_commit_keeps_the_new_revision() -> None:
    steps = plan_cleanup(
        committed=True,
        target=3,
        current=2,
        order="stop_first",
        any_stopped=True,
        toolbox_stopped=False,
    )
    assert steps == [MarkStable(3), RemoveServers(2, "superseded")]


@pytest.mark.parametrize(
    ("order", "any_stopped", "toolbox_stopped", "restores"),
    [
        ("stop_first", True, False, True),
        ("stop_first", True, True, False),
        ("stop_first", False, False, False),
        ("start_first", True, False, False),
    ],
)
def test_cleanup_before_the_commit_removes_it_and_restores_a_stopped_revision(
    order: Order, any_stopped: bool, toolbox_stopped: bool, restores: bool
) -> None:
    steps = plan_cleanup(
        committed=False,
        target=3,
        current=2,
        order=order,
        any_stopped=any_stopped,
        toolbox_stopped=toolbox_stopped,
    )
    base = [RemoveRevision(3, "rollout_failed"), ClearTarget(3)]
    assert steps == ([*base, RestoreStopped(2)] if restores else base)


def test_cleanup_of_a_first_rollout_restores_nothing() -> None:
    steps = plan_cleanup(
        committed=False,
        target=1,
        current=None,
        order="stop_first",
        any_stopped=True,
        toolbox_stopped=False,
    )
    assert steps == [RemoveRevision(1), ClearTarget(1)]


def test_rotation_replaces_each_changed_server_in_order() -> None:
    assert plan_rotation(["b", "a"], 4) == [RotateServer("b", 4), RotateServer("a", 4)]
    assert plan_rotation([], 4) == []
