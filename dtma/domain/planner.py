"""Pure planning for recovery (balena's plan-then-execute): observed containers in, steps out.

The executor (engine/recovery.py) is the only code that acts on the steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from dtma.domain.containers import ObservedContainer

Action = Literal["adopt", "adopt_stopped", "recreate", "remove", "keep", "leave", "restart"]

# Reasons, as they appear in events.
NOT_WANTED = "not_wanted"
DUPLICATE = "duplicate"
EXITED = "exited"
MISSING = "missing"


@dataclass(frozen=True)
class Step:
    action: Action
    server: str | None
    container_id: str | None = None
    reason: str = ""


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


def plan_serving(
    observed: Sequence[ObservedContainer],
    revision: int | None,
    servers: Sequence[str],
    *,
    stopped: bool,
) -> list[Step]:
    """Steps that leave exactly one container per server of `revision`, adopting what runs.

    Running containers are adopted untouched; a stopped toolbox's containers are adopted as
    they are; exited or missing servers are recreated; every other container is removed.
    """
    steps: list[Step] = []
    keep: set[str] = set()
    if revision is not None:
        candidates = newest_per_server(observed, revision, running_only=False)
        for server in servers:
            c = candidates.get(server)
            if c is not None and c.running:
                steps.append(Step("adopt", server, c.id))
                keep.add(c.id)
            elif c is not None and stopped:
                steps.append(Step("adopt_stopped", server, c.id))
                keep.add(c.id)
            else:
                if c is not None:
                    steps.append(Step("remove", server, c.id, EXITED))
                    keep.add(c.id)  # already planned for removal
                steps.append(Step("recreate", server, None, MISSING if c is None else EXITED))
    for c in observed:
        if c.id not in keep:
            reason = DUPLICATE if c.revision == revision and c.server in servers else NOT_WANTED
            steps.append(Step("remove", c.server or None, c.id, reason))
    return steps


@dataclass(frozen=True)
class Held:
    """What the agent holds for one server when the engine returns: its runner's container and
    state, and whether that runner can simply go on (its session survives a daemon restart,
    as an HTTP server's does, and it is not waiting on the engine)."""

    container_id: str
    state: str
    keepable: bool


def plan_engine_return(
    observed: Sequence[ObservedContainer],
    revision: int,
    servers: Sequence[str],
    held: Mapping[str, Held],
) -> list[Step]:
    """Steps, server by server, after the engine came back from an outage or a restart.

    A runner that stopped or gave up is left as it is. A running container is kept with its
    runner when that runner can go on, else adopted by a new one (a stdio session is
    re-attached, never re-initialized). A server whose container stopped or vanished is
    restarted by a new runner (charging no budget: the engine stopped it). Every other
    container is removed.
    """
    steps: list[Step] = []
    wanted: set[str] = set()
    running = newest_per_server(observed, revision, running_only=True)
    latest = newest_per_server(observed, revision, running_only=False)
    for server in servers:
        h = held.get(server)
        if h is not None and h.state in ("failed", "stopped"):
            steps.append(Step("leave", server, h.container_id, h.state))
            wanted.add(h.container_id)
            continue
        c = running.get(server)
        if c is not None:
            wanted.add(c.id)
            keep = h is not None and h.container_id == c.id and h.keepable
            steps.append(Step("keep" if keep else "adopt", server, c.id))
            continue
        gone = latest.get(server)
        target = gone.id if gone is not None else (h.container_id if h is not None else None)
        if target is not None:
            wanted.add(target)
        steps.append(Step("restart", server, target, EXITED if gone is not None else MISSING))
    for c in observed:
        if c.id not in wanted:
            dup = c.revision == revision and c.server in servers
            steps.append(Step("remove", c.server or None, c.id, DUPLICATE if dup else NOT_WANTED))
    return steps
