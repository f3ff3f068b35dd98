"""The one reconcile planner: what is wanted, observed and held in, steps out. No Docker.

One table for both of its callers: the agent's own start (nothing held, saved restart states,
exits charged) and the engine's return (the runners held, nothing charged), and the mixes of the
two that one planner now makes possible.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from dtma.domain.containers import ObservedContainer
from dtma.domain.planner import (
    DUPLICATE,
    EXITED,
    FAILED,
    MISSING,
    NOT_WANTED,
    Held,
    Inputs,
    Step,
    complete_revision,
    plan,
)


def c(
    cid: str,
    server: str,
    revision: int = 3,
    state: str = "running",
    started: str = "2026-01-01T00:00:00",
) -> ObservedContainer:
    return ObservedContainer(
        cid,
        f"n-{cid}",
        "tb",
        server,
        revision,
        "h",
        state,
        None if state == "running" else 1,
        None,
        None,
        started,
    )


def held(cid: str, state: str = "running", keepable: bool = True) -> Held:
    return Held(cid, state, keepable)


# The agent's start: exits are charged; the engine's return: nothing is held but runners.
START = Inputs((), 3, ["a"], charge_exits=True)
RETURN = Inputs((), 3, ["a"])

CASES: dict[str, tuple[Inputs, list[Step]]] = {
    # -- on the agent's start ------------------------------------------------------------------
    "start: running containers are adopted untouched": (
        replace(START, observed=[c("1", "a"), c("2", "b")], servers=["a", "b"]),
        [Step("adopt", "a", "1"), Step("adopt", "b", "2")],
    ),
    "start: exited and missing servers are restarted, charged": (
        replace(START, observed=[c("1", "a", state="exited")], servers=["a", "b"]),
        [Step("restart", "a", "1", EXITED, True), Step("restart", "b", None, MISSING, True)],
    ),
    "start: a stopped toolbox keeps its stopped containers": (
        replace(START, observed=[c("1", "a", state="exited")], stopped=True),
        [Step("adopt_stopped", "a", "1")],
    ),
    "start: a stopped toolbox still adopts what runs": (
        replace(START, observed=[c("1", "a")], stopped=True),
        [Step("adopt", "a", "1")],
    ),
    "start: other revisions, duplicates and strangers are removed": (
        replace(
            START,
            observed=[
                c("old", "a", 2),
                c("dup", "a", started="2026-01-01T00:00:00"),
                c("new", "a", started="2026-01-01T00:00:05"),
                c("gone", "z"),
            ],
        ),
        [
            Step("adopt", "a", "new"),
            Step("remove", "a", "old", NOT_WANTED),
            Step("remove", "a", "dup", DUPLICATE),
            Step("remove", "z", "gone", NOT_WANTED),
        ],
    ),
    "start: no serving revision removes everything": (
        replace(START, observed=[c("1", "a", 1)], revision=None, servers=[]),
        [Step("remove", "a", "1", NOT_WANTED)],
    ),
    "start: an exit the engine caused during recovery is not charged": (
        replace(START, observed=[c("1", "a", state="exited")], engine_stopped=frozenset({"1"})),
        [Step("restart", "a", "1", EXITED, False)],
    ),
    "start: a restart counted before the agent died is not charged again": (
        replace(START, observed=[c("1", "a", state="exited")], pending=frozenset({"a"})),
        [Step("restart", "a", "1", EXITED, False)],
    ),
    "start: a missing server with a pending restart is not charged again": (
        replace(START, pending=frozenset({"a"})),
        [Step("restart", "a", None, MISSING, False)],
    ),
    "start: a crashed server whose budget a charge would spend stays failed": (
        replace(START, observed=[c("1", "a", state="exited")], spent=frozenset({"a"})),
        [Step("leave", "a", "1", FAILED)],
    ),
    "start: a spent budget does not stop a restart the engine's exit asks for": (
        replace(
            START,
            observed=[c("1", "a", state="exited")],
            spent=frozenset({"a"}),
            engine_stopped=frozenset({"1"}),
        ),
        [Step("restart", "a", "1", EXITED, False)],
    ),
    "start: a missing server is restarted even with its budget spent (as before)": (
        replace(START, spent=frozenset({"a"})),
        [Step("restart", "a", None, MISSING, True)],
    ),
    "start: a server saved as given up stays failed, its exited container kept": (
        replace(START, observed=[c("1", "a", state="exited")], gave_up=frozenset({"a"})),
        [Step("leave", "a", "1", FAILED)],
    ),
    "start: a server saved as given up stays failed without a container": (
        replace(START, gave_up=frozenset({"a"})),
        [Step("leave", "a", None, FAILED)],
    ),
    "start: given up outweighs an engine's exit (no revival by a blip)": (
        replace(
            START,
            observed=[c("1", "a", state="exited")],
            gave_up=frozenset({"a"}),
            engine_stopped=frozenset({"1"}),
        ),
        [Step("leave", "a", "1", FAILED)],
    ),
    "start: what a finished rollout's runners hold is kept": (
        replace(START, observed=[c("1", "a"), c("2", "a", 2)], held={"a": held("1")}),
        [Step("keep", "a", "1"), Step("remove", "a", "2", NOT_WANTED)],
    ),
    # -- on the engine's return ----------------------------------------------------------------
    "return: each server is kept, adopted or restarted, uncharged": (
        replace(
            RETURN,
            observed=[
                c("1", "http"),  # still running (live-restore): its runner goes on
                c("2", "stdio"),  # still running: a new runner re-attaches
                c("3", "gone", state="exited"),  # stopped with the daemon: restarted
                c("4", "http", 2),  # an old revision's leftover
            ],
            servers=["http", "stdio", "gone", "lost"],
            held={
                "http": held("1"),
                "stdio": held("2", keepable=False),
                "gone": held("3"),
                "lost": held("9"),  # its container vanished
            },
        ),
        [
            Step("keep", "http", "1"),
            Step("adopt", "stdio", "2"),
            Step("restart", "gone", "3", EXITED),
            Step("restart", "lost", "9", MISSING),
            Step("remove", "http", "4", NOT_WANTED),
        ],
    ),
    "return: given-up and stopped servers are left alone": (
        replace(
            RETURN,
            observed=[
                c("1", "a", state="exited"),
                c("2", "b", state="exited"),
                c("5", "b", state="exited"),
            ],
            servers=["a", "b"],
            held={"a": held("1", "failed", False), "b": held("2", "stopped", False)},
        ),
        [
            Step("leave", "a", "1", "failed"),
            Step("leave", "b", "2", "stopped"),
            Step("remove", "b", "5", DUPLICATE),
        ],
    ),
    "return: a runner holding another container than the one running is replaced": (
        replace(RETURN, observed=[c("2", "a")], held={"a": held("1")}),
        [Step("adopt", "a", "2")],
    ),
    "return: a server neither held nor found is restarted from nothing": (
        RETURN,
        [Step("restart", "a", None, MISSING)],
    ),
    "return: a left failed runner's leftovers of its revision are duplicates": (
        replace(
            RETURN,
            observed=[c("1", "a", state="exited"), c("2", "a")],
            held={"a": held("1", "failed", False)},
        ),
        [Step("leave", "a", "1", "failed"), Step("remove", "a", "2", DUPLICATE)],
    ),
    # -- the mixes one planner makes possible ----------------------------------------------------
    "mixed: a held failed runner outweighs saved states and charges": (
        replace(
            START,
            observed=[c("1", "a", state="exited")],
            held={"a": held("1", "failed", False)},
            pending=frozenset({"a"}),
        ),
        [Step("leave", "a", "1", "failed")],
    ),
    "mixed: charged exits, one held runner kept, one crashed": (
        replace(
            START,
            observed=[c("1", "a"), c("2", "b", state="exited")],
            servers=["a", "b"],
            held={"a": held("1")},
        ),
        [Step("keep", "a", "1"), Step("restart", "b", "2", EXITED, True)],
    ),
    "mixed: with nothing charged, a spent budget leaves nobody failed": (
        replace(RETURN, observed=[c("1", "a", state="exited")], spent=frozenset({"a"})),
        [Step("restart", "a", "1", EXITED)],
    ),
    "mixed: a stopped toolbox on the engine's return keeps an unheld stopped container": (
        replace(RETURN, observed=[c("1", "a", state="exited")], stopped=True),
        [Step("adopt_stopped", "a", "1")],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_plan(name: str) -> None:
    inputs, steps = CASES[name]
    assert plan(inputs) == steps


def test_complete_revision_needs_every_server_running() -> None:
    observed = [c("1", "a", 4), c("2", "b", 4, "exited"), c("3", "b", 3)]
    assert complete_revision(observed, 4, ["a", "b"]) is None
    full = complete_revision([*observed, c("4", "b", 4, started="2026-01-02")], 4, ["a", "b"])
    assert full is not None
    assert {k: v.id for k, v in full.items()} == {"a": "1", "b": "4"}
