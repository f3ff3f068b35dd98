"""Pure: what the state DB keeps (retention), and which of a toolbox's revisions may go.

Events and finished operations are pruned by age and by count, oldest first. Running operations
are never pruned. A revision goes when it is older than `max_age` or not among the toolbox's
newest `max_revisions`, unless it is protected: the current (serving) revision, the target of a
rollout in flight, the stable revision, the newest revision, and the newest stable revision other
than the current one (the default rollback target). The store also keeps the revision of any
queued or running operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DAY_S = 86400.0


@dataclass(frozen=True)
class RetentionPolicy:
    max_age: float = 7 * DAY_S
    max_events: int = 100_000
    max_operations: int = 10_000
    max_revisions: int = 50  # per toolbox
    max_calls: int = 100_000  # the tool-call journal, all toolboxes


@dataclass(frozen=True)
class RevisionInfo:
    number: int
    stable: bool
    created_at: float


@dataclass(frozen=True)
class Pruned:
    events: int = 0
    operations: int = 0
    revisions: int = 0
    calls: int = 0

    @property
    def total(self) -> int:
        return self.events + self.operations + self.revisions + self.calls


def protected_revisions(
    revisions: Sequence[RevisionInfo],
    current: int | None,
    target: int | None,
    stable: int | None,
) -> set[int]:
    """Revision numbers that must never be pruned (see the module docstring)."""
    keep = {n for n in (current, target, stable) if n is not None}
    if revisions:
        keep.add(max(r.number for r in revisions))
    rollback = [r.number for r in revisions if r.stable and r.number != current]
    if rollback:
        keep.add(max(rollback))
    return keep


def revisions_to_prune(
    revisions: Sequence[RevisionInfo],
    *,
    current: int | None,
    target: int | None,
    stable: int | None,
    now: float,
    policy: RetentionPolicy,
) -> list[int]:
    """The numbers of one toolbox's revisions to delete, ascending."""
    keep = protected_revisions(revisions, current, target, stable)
    newest = set(sorted((r.number for r in revisions), reverse=True)[: policy.max_revisions])
    cutoff = now - policy.max_age
    return sorted(
        r.number
        for r in revisions
        if r.number not in keep and (r.created_at < cutoff or r.number not in newest)
    )
