"""Pure planning for rollouts, rollbacks and secret rotation (balena's plan-then-execute).

`plan_rollout` gives the steps up to the gate's verdict; `outcome` maps the verdict to the
operation's result, whether it settles the phase and the follow-up steps (commit, or remove and
revert);
`plan_cleanup` gives the steps after an unexpected exception; `plan_rotation` the per-server
replacements of a secret refresh. Steps are frozen data; engine/executor.py is the only code
that acts on them. No I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Order = Literal["start_first", "stop_first"]
Verdict = Literal["passed", "failed"]
OpState = Literal["succeeded", "rolled_back", "failed"]

SUCCEEDED: OpState = "succeeded"
ROLLED_BACK: OpState = "rolled_back"
FAILED: OpState = "failed"

# Reasons, as they appear in events.
STOP_FIRST = "stop_first"
SUPERSEDED = "superseded"
ROLLOUT_FAILED = "rollout_failed"


@dataclass(frozen=True)
class Announce:
    """Record `revision` as the target, begin the rollout's `deploying`, emit the started event."""

    revision: int
    from_revision: int | None
    is_rollback: bool
    action: Literal["announce"] = field(default="announce", init=False)


@dataclass(frozen=True)
class StopServers:
    """Stop every serving container of `revision` (kept, not removed: a revert restarts them)."""

    revision: int
    reason: str = STOP_FIRST
    action: Literal["stop_servers"] = field(default="stop_servers", init=False)


@dataclass(frozen=True)
class StartAndGate:
    """Start every server of `revision` and hold the group gate; `abortable`: a newer applied
    revision fails the gate at once (last write wins)."""

    revision: int
    abortable: bool
    action: Literal["start_and_gate"] = field(default="start_and_gate", init=False)


@dataclass(frozen=True)
class Commit:
    """Serve `revision`: its runners, spec, number and `stopped=False` together; supervise
    them, mark the revision stable. From here on a crash keeps it."""

    revision: int
    action: Literal["commit"] = field(default="commit", init=False)


@dataclass(frozen=True)
class MarkStable:
    revision: int
    action: Literal["mark_stable"] = field(default="mark_stable", init=False)


@dataclass(frozen=True)
class RemoveServers:
    """Remove the runners (and containers) that served `revision` before this operation."""

    revision: int | None
    reason: str = SUPERSEDED
    action: Literal["remove_servers"] = field(default="remove_servers", init=False)


@dataclass(frozen=True)
class ReportGate:
    """Emit the gate's verdict (rollout or rollback passed/failed) for `revision`."""

    revision: int
    action: Literal["report_gate"] = field(default="report_gate", init=False)


@dataclass(frozen=True)
class RemoveRevision:
    """Remove every container of `revision`, tracked by a runner or not."""

    revision: int
    reason: str = ROLLOUT_FAILED
    action: Literal["remove_revision"] = field(default="remove_revision", init=False)


@dataclass(frozen=True)
class ClearTarget:
    revision: int
    action: Literal["clear_target"] = field(default="clear_target", init=False)


@dataclass(frozen=True)
class RestoreStopped:
    """stop_first revert: start `revision`'s stopped containers again (recreate the missing)
    and gate them. A rollback, so never itself rolled back."""

    revision: int
    action: Literal["restore_stopped"] = field(default="restore_stopped", init=False)


@dataclass(frozen=True)
class RotateServer:
    """Start one new container of `server` beside the old one and gate it alone; on a pass it
    replaces the old one, else it is removed and the rotation stops."""

    server: str
    revision: int
    action: Literal["rotate_server"] = field(default="rotate_server", init=False)


Step = (
    Announce
    | StopServers
    | StartAndGate
    | Commit
    | MarkStable
    | RemoveServers
    | ReportGate
    | RemoveRevision
    | ClearTarget
    | RestoreStopped
    | RotateServer
)


@dataclass(frozen=True)
class Serving:
    """What serves before the operation: a revision with at least one server runner."""

    revision: int


@dataclass(frozen=True)
class Outcome:
    """The operation's result after the gate: its state, whether the verdict settles the phase
    before the operation ends (`settles`: the gate passed, or nothing serves; else the rollout
    reads `deploying` until the operation ends; domain/phase.py), the steps to run first, and,
    when a RestoreStopped step is among them, the outcome that replaces this one if it fails."""

    state: OpState
    settles: bool
    steps: tuple[Step, ...] = ()
    if_restore_fails: Outcome | None = None
    note: str = ""  # appended to the error text


def plan_rollout(
    current: Serving | None, target: int, order: Order, is_rollback: bool
) -> list[Step]:
    """The steps up to and including the gate. stop_first stops what serves first."""
    steps: list[Step] = [Announce(target, current.revision if current else None, is_rollback)]
    if order == "stop_first" and current is not None:
        steps.append(StopServers(current.revision))
    steps.append(StartAndGate(target, abortable=not is_rollback))
    return steps


def outcome(
    verdict: Verdict,
    order: Order,
    auto_revert: bool,
    had_stable: bool,
    is_rollback: bool,
    superseded: bool,
    *,
    target: int,
    current: int | None,
) -> Outcome:
    """Map the gate's verdict to the operation's result and the steps that follow.

    `had_stable`: a revision was serving before (`current`). A pass commits `target` and removes
    what served. A failure removes `target` and clears it; under stop_first the stopped revision
    is restored. The result is rolled_back only when the old revision serves again by the
    revert rules (auto_revert, not a rollback itself, not superseded by a newer apply)."""
    if verdict == "passed":
        passed: list[Step] = [Commit(target)]
        if had_stable:
            passed.append(RemoveServers(current, SUPERSEDED))
        passed.append(ReportGate(target))
        return Outcome(SUCCEEDED, True, tuple(passed))
    steps: list[Step] = [ReportGate(target), RemoveRevision(target), ClearTarget(target)]
    if_restore_fails = None
    if order == "stop_first" and had_stable and current is not None:
        steps.append(RestoreStopped(current))
        if_restore_fails = Outcome(FAILED, True, note=f"; restarting revision {current} failed too")
    if not had_stable:
        # Nothing serves: failed, unless a newer revision deploys next (its rollout says so).
        return Outcome(FAILED, not superseded, tuple(steps), if_restore_fails)
    if is_rollback or not auto_revert or superseded:
        return Outcome(FAILED, False, tuple(steps), if_restore_fails)
    return Outcome(ROLLED_BACK, False, tuple(steps), if_restore_fails)


def plan_cleanup(
    *,
    committed: bool,
    target: int,
    current: int | None,
    order: Order,
    any_stopped: bool,
    toolbox_stopped: bool,
) -> list[Step]:
    """The steps after an unexpected exception. Once committed the new revision stays and the
    old one goes; before that, the new revision's containers go (tracked or not), the target is
    cleared, and a revision stopped by stop_first starts again (unless the toolbox is stopped).
    The executor tries every step and logs the ones that fail."""
    if committed:
        return [MarkStable(target), RemoveServers(current, SUPERSEDED)]
    steps: list[Step] = [RemoveRevision(target), ClearTarget(target)]
    if order == "stop_first" and any_stopped and current is not None and not toolbox_stopped:
        steps.append(RestoreStopped(current))
    return steps


def plan_rotation(changed: Sequence[str], revision: int) -> list[RotateServer]:
    """One gated replacement per server whose secret values changed, in order, one at a time."""
    return [RotateServer(name, revision) for name in changed]
