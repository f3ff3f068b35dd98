"""The one reconcile planner (balena's plan-then-execute): what is wanted, observed and held in,
steps out, server by server. The agent's own restart and the engine's return differ only in
their inputs (`Inputs`); the executor (engine/reconcile.py) is the only code that acts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from dtma.domain.containers import ObservedContainer

Action = Literal["keep", "adopt", "adopt_stopped", "restart", "leave", "remove"]

# Reasons, as they appear in events.
NOT_WANTED = "not_wanted"
DUPLICATE = "duplicate"
EXITED = "exited"
MISSING = "missing"
FAILED = "failed"


@dataclass(frozen=True)
class Step:
    action: Action
    server: str | None
    container_id: str | None = None
    reason: str = ""
    charged: bool = False  # a restart's: the exit was the server's, its budget pays


@dataclass(frozen=True)
class Held:
    """What the agent holds for one server: its runner's container and state, and whether that
    runner can simply go on (its session survived whatever happened, and it is not waiting on
    the engine)."""

    container_id: str
    state: str
    keepable: bool


@dataclass(frozen=True)
class Inputs:
    """One pass's view of a toolbox. On the agent's start nothing is held (but what a rollout
    recovery just kept) and the saved restart states speak for the servers; on the engine's
    return the runners do, and no exit is charged (the engine stopped them)."""

    observed: Sequence[ObservedContainer]
    revision: int | None  # the serving revision; None: nothing is wanted
    servers: Sequence[str]
    held: Mapping[str, Held] = field(default_factory=dict)
    stopped: bool = False  # the toolbox is stopped: its stopped containers stay so
    gave_up: frozenset[str] = frozenset()  # saved as given up, no restart pending
    pending: frozenset[str] = frozenset()  # a restart was saved ahead and already counted
    spent: frozenset[str] = frozenset()  # one more charged failure gives up
    charge_exits: bool = False
    engine_stopped: frozenset[str] = frozenset()  # container ids whose exit was the engine's


def newest_per_server(
    observed: Iterable[ObservedContainer], revision: int, *, running_only: bool
) -> dict[str, ObservedContainer]:
    """The most recently started container of each server of `revision`."""
    out: dict[str, ObservedContainer] = {}
    for c in sorted(observed, key=lambda c: c.started_at):
        if c.revision == revision and (c.running or not running_only):
            out[c.server] = c
    return out


def complete_revision(
    observed: Sequence[ObservedContainer], revision: int, servers: Sequence[str]
) -> dict[str, ObservedContainer] | None:
    """A running container for every server of `revision`, or None if any is missing."""
    running = newest_per_server(observed, revision, running_only=True)
    return running if all(s in running for s in servers) else None


def plan(inputs: Inputs) -> list[Step]:
    """Steps that leave exactly one container per server of the serving revision, then remove
    every container no server wants. Per server, in this order: a held runner that stopped
    or gave up is left; a running container is kept with a runner that can go on, else
    adopted (a stdio session re-attached, never re-initialized); a stopped toolbox's stopped
    container is adopted as it is; a server saved as given up, or whose charged exit spends
    its budget, is left failed; any other is restarted, charged unless the exit was the
    engine's or was counted before the agent died."""
    steps: list[Step] = []
    wanted: set[str] = set()
    if inputs.revision is not None:
        running = newest_per_server(inputs.observed, inputs.revision, running_only=True)
        latest = newest_per_server(inputs.observed, inputs.revision, running_only=False)
        for server in inputs.servers:
            step = _plan_server(inputs, server, running.get(server), latest.get(server))
            steps.append(step)
            if step.container_id is not None:
                wanted.add(step.container_id)
    for c in inputs.observed:
        if c.id not in wanted:
            dup = c.revision == inputs.revision and c.server in inputs.servers
            steps.append(Step("remove", c.server or None, c.id, DUPLICATE if dup else NOT_WANTED))
    return steps


def _plan_server(
    inputs: Inputs,
    server: str,
    running: ObservedContainer | None,
    latest: ObservedContainer | None,
) -> Step:
    held = inputs.held.get(server)
    if held is not None and held.state in (FAILED, "stopped"):
        return Step("leave", server, held.container_id, held.state)
    if running is not None:
        keep = held is not None and held.container_id == running.id and held.keepable
        return Step("keep" if keep else "adopt", server, running.id)
    if latest is not None and inputs.stopped:
        return Step("adopt_stopped", server, latest.id)
    target = latest.id if latest is not None else (held.container_id if held else None)
    if server in inputs.gave_up:
        return Step("leave", server, target, FAILED)
    reason = EXITED if latest is not None else MISSING
    charged = (
        inputs.charge_exits
        and server not in inputs.pending
        and (latest is None or latest.id not in inputs.engine_stopped)
    )
    if charged and latest is not None and server in inputs.spent:
        return Step("leave", server, target, FAILED)
    return Step("restart", server, target, reason, charged)
