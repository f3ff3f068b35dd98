"""A toolbox's phase, derived (issue 19, "nobody pushes it"): a pure function of what the toolbox
serves and what it is doing. ToolboxState (engine/toolbox_state.py) keeps the inputs, recomputes
after each change of one, and is the only writer of the result (memory, the state DB, the event).

The phases are DESIGN.md's: deploying | healthy | degraded | failed | stopped | deleting.

- An activity of the running operation says it on its own: a rollout from its announcement
  until its verdict (or until the operation ends) and the agent's start-up recovery are
  `deploying`; a delete is `deleting`. Any other operation (stop, start, restart, rotation)
  changes only the servers, and the phase follows them.
- A toolbox that is gone (deleted) stays `deleting`: nothing is written for it any more.
- A start-up recovery that failed leaves the toolbox `failed` until the next operation ends.
- Otherwise: `stopped` when stopped; with servers, `degraded` if any is failed, restarting or
  exited, fails its probe, is being replaced, or runs without a probe's answer yet, else
  `healthy`. A server counts as serving only once its probe has answered: the probe opens the
  session the endpoint calls it through (stdio attach, HTTP held session), so `healthy` never
  reads while a call would fail (issue 19, item 4). With none, `failed` (with the reason of the
  operation that left it so), or `deploying` while nothing has ended yet or a newer apply
  superseded the last one (it runs next).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

DEPLOYING = "deploying"
HEALTHY = "healthy"
DEGRADED = "degraded"
FAILED = "failed"
STOPPED = "stopped"
DELETING = "deleting"

RECOVERY_FAILED = "recovery_failed"  # the reason of a failed start-up recovery's phase

# A serving server in one of these states makes its toolbox degraded ("removed": being replaced
# by a restart operation, its successor not up yet).
_DEGRADED_STATES = frozenset({"failed", "restarting", "exited", "removed"})


class Activity(Enum):
    """What the running operation does that shows in the phase on its own."""

    RECOVERING = "recovering"  # the agent's start-up recovery brings the toolbox back
    DEPLOYING = "deploying"  # a rollout announced its revision and has no verdict yet
    DELETING = "deleting"  # a delete removes the toolbox


class Ended(Enum):
    """How the last operation (or start-up recovery) ended, as far as the phase cares."""

    NOTHING = "nothing"  # nothing has ended yet on this runner
    SUCCEEDED = "succeeded"  # succeeded or rolled back (the servers tell the rest)
    FAILED = "failed"
    SUPERSEDED = "superseded"  # failed because a newer apply replaces it; that one runs next
    RECOVERY_FAILED = "recovery_failed"


@dataclass(frozen=True)
class ServerView:
    state: str
    health: str


@dataclass(frozen=True)
class PhaseInputs:
    activity: Activity | None = None
    ended: Ended = Ended.NOTHING
    error: str = ""  # the error of the operation that ended (the reason of a `failed`)
    stopped: bool = False
    servers: Sequence[ServerView] = ()
    gone: bool = False  # deleted: its row and everything under it are gone


def derive_phase(inputs: PhaseInputs) -> tuple[str, str]:
    """(phase, reason) for `inputs`; the reason is empty unless the phase is `failed` for an
    ended operation's reason."""
    if inputs.gone:
        return DELETING, ""
    if inputs.activity is Activity.DELETING:
        return DELETING, ""
    if inputs.activity is not None:
        return DEPLOYING, ""
    if inputs.ended is Ended.RECOVERY_FAILED:
        return FAILED, RECOVERY_FAILED
    if inputs.stopped:
        return STOPPED, ""
    if inputs.servers:
        return _from_servers(inputs.servers), ""
    if inputs.ended in (Ended.NOTHING, Ended.SUPERSEDED):
        return DEPLOYING, ""
    return FAILED, inputs.error if inputs.ended is Ended.FAILED else ""


def _from_servers(servers: Sequence[ServerView]) -> str:
    if any(_not_serving(s) for s in servers):
        return DEGRADED
    return HEALTHY


def _not_serving(server: ServerView) -> bool:
    if server.state in _DEGRADED_STATES or server.health == "unhealthy":
        return True
    return server.state == "running" and server.health == "unknown"  # not answered yet
