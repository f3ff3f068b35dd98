"""domain/phase.derive_phase: the phase as a pure function of its inputs, table by table (issue 19,
"the phase is derived from the server states and the running operation; nobody pushes it")."""

from __future__ import annotations

import itertools

import pytest

from dtma.domain.phase import (
    DEGRADED,
    DELETING,
    DEPLOYING,
    FAILED,
    HEALTHY,
    RECOVERY_FAILED,
    STOPPED,
    Activity,
    Ended,
    PhaseInputs,
    ServerView,
    derive_phase,
)

UP = ServerView("running", "healthy")
STARTING = ServerView("running", "unknown")  # no probe answered yet: not serving (item 4)
UNHEALTHY = ServerView("running", "unhealthy")
RESTARTING = ServerView("restarting", "unknown")
EXITED = ServerView("exited", "unknown")
GAVE_UP = ServerView("failed", "unhealthy")
HALTED = ServerView("stopped", "unknown")  # stopped on request: not a failure
REMOVED = ServerView("removed", "unknown")  # replaced by a restart in progress

# Server sets -> the phase they give when nothing else decides it.
SERVERS = {
    "one healthy": ((UP,), HEALTHY),
    "all healthy": ((UP, UP, UP), HEALTHY),
    "starting": ((UP, STARTING), DEGRADED),  # its session is not open: a call would fail
    "stopped on request": ((UP, HALTED), HEALTHY),
    "being replaced": ((UP, REMOVED), DEGRADED),
    "one unhealthy": ((UP, UNHEALTHY), DEGRADED),
    "one restarting": ((UP, RESTARTING), DEGRADED),
    "one exited": ((EXITED, UP), DEGRADED),
    "one gave up": ((UP, GAVE_UP), DEGRADED),
    "all gave up": ((GAVE_UP, GAVE_UP), DEGRADED),
}

# With no servers (and not stopped, not gone, no activity): how the last operation ended.
NO_SERVERS = {
    Ended.NOTHING: (DEPLOYING, ""),  # a new toolbox: its first apply has not run yet
    Ended.SUPERSEDED: (DEPLOYING, ""),  # a newer apply runs next
    Ended.SUCCEEDED: (FAILED, ""),  # e.g. a recovery that found nothing to serve
    Ended.FAILED: (FAILED, "gate failed"),  # the operation's error is the reason
    Ended.RECOVERY_FAILED: (FAILED, RECOVERY_FAILED),
}


@pytest.mark.parametrize(("servers", "expected"), list(SERVERS.values()), ids=list(SERVERS))
@pytest.mark.parametrize("ended", [Ended.NOTHING, Ended.SUCCEEDED, Ended.FAILED, Ended.SUPERSEDED])
def test_with_no_operation_running_the_servers_decide(
    servers: tuple[ServerView, ...], expected: str, ended: Ended
) -> None:
    """A failed operation with a revision still serving (start_first's old one, a rolled-back
    one): the servers decide, whatever the operation's error."""
    assert derive_phase(PhaseInputs(ended=ended, error="gate failed", servers=servers)) == (
        expected,
        "",
    )


@pytest.mark.parametrize(("ended", "expected"), list(NO_SERVERS.items()))
def test_with_no_servers_the_last_operation_decides(
    ended: Ended, expected: tuple[str, str]
) -> None:
    assert derive_phase(PhaseInputs(ended=ended, error="gate failed")) == expected


@pytest.mark.parametrize("ended", [Ended.NOTHING, Ended.SUCCEEDED, Ended.FAILED, Ended.SUPERSEDED])
@pytest.mark.parametrize("servers", [(), (UP,), (HALTED, HALTED), (GAVE_UP,)])
def test_a_stopped_toolbox_is_stopped_whatever_its_servers(
    ended: Ended, servers: tuple[ServerView, ...]
) -> None:
    assert derive_phase(PhaseInputs(ended=ended, stopped=True, servers=servers)) == (STOPPED, "")


@pytest.mark.parametrize("stopped", [False, True])
@pytest.mark.parametrize("servers", [(), (UP,), (GAVE_UP, UP)])
def test_a_failed_start_up_recovery_is_failed_until_the_next_operation_ends(
    stopped: bool, servers: tuple[ServerView, ...]
) -> None:
    """Its runners are halted (unsupervised): their states say nothing about the toolbox."""
    inputs = PhaseInputs(ended=Ended.RECOVERY_FAILED, stopped=stopped, servers=servers)
    assert derive_phase(inputs) == (FAILED, RECOVERY_FAILED)


ACTIVITIES = {
    Activity.DEPLOYING: DEPLOYING,  # a rollout or rollback, from its announcement to its verdict
    Activity.RECOVERING: DEPLOYING,  # the agent's start-up recovery
    Activity.DELETING: DELETING,
}


@pytest.mark.parametrize(("activity", "expected"), list(ACTIVITIES.items()))
def test_an_operations_activity_decides_over_everything_but_deletion(
    activity: Activity, expected: str
) -> None:
    """Every combination of the other inputs: the activity says the phase."""
    server_sets = [(), *(s for s, _ in SERVERS.values())]
    for ended, stopped, servers in itertools.product(Ended, (False, True), server_sets):
        inputs = PhaseInputs(
            activity=activity, ended=ended, error="x", stopped=stopped, servers=servers
        )
        assert derive_phase(inputs) == (expected, ""), inputs


def test_a_deleted_toolbox_stays_deleting() -> None:
    server_sets = [(), *(s for s, _ in SERVERS.values())]
    activities = [None, *Activity]
    for activity, ended, stopped, servers in itertools.product(
        activities, Ended, (False, True), server_sets
    ):
        inputs = PhaseInputs(
            activity=activity, ended=ended, stopped=stopped, servers=servers, gone=True
        )
        assert derive_phase(inputs) == (DELETING, ""), inputs


def test_the_defaults_are_a_new_toolbox_deploying() -> None:
    """ToolboxState starts from these: the phase of a runner that has done nothing yet."""
    assert derive_phase(PhaseInputs()) == (DEPLOYING, "")


def test_only_a_failed_phase_carries_a_reason() -> None:
    server_sets = [(), *(s for s, _ in SERVERS.values())]
    for activity, ended, stopped, servers, gone in itertools.product(
        [None, *Activity], Ended, (False, True), server_sets, (False, True)
    ):
        phase, reason = derive_phase(PhaseInputs(activity, ended, "boom", stopped, servers, gone))
        assert phase in (DEPLOYING, HEALTHY, DEGRADED, FAILED, STOPPED, DELETING)
        assert reason == "" or phase == FAILED
