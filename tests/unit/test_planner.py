"""The recovery planner: observed containers in, steps out. No Docker."""

from __future__ import annotations

from dtma.domain import planner
from dtma.domain.containers import ObservedContainer
from dtma.domain.planner import Step, complete_revision, plan_serving


def c(
    cid: str,
    server: str,
    revision: int,
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


def test_running_containers_are_adopted_untouched() -> None:
    steps = plan_serving([c("1", "a", 3), c("2", "b", 3)], 3, ["a", "b"], stopped=False)
    assert steps == [Step("adopt", "a", "1"), Step("adopt", "b", "2")]


def test_exited_and_missing_servers_are_recreated() -> None:
    steps = plan_serving([c("1", "a", 3, "exited")], 3, ["a", "b"], stopped=False)
    assert steps == [
        Step("remove", "a", "1", planner.EXITED),
        Step("recreate", "a", None, planner.EXITED),
        Step("recreate", "b", None, planner.MISSING),
    ]


def test_a_stopped_toolbox_keeps_its_stopped_containers() -> None:
    steps = plan_serving([c("1", "a", 3, "exited")], 3, ["a"], stopped=True)
    assert steps == [Step("adopt_stopped", "a", "1")]


def test_other_revisions_duplicates_and_strangers_are_removed() -> None:
    observed = [
        c("old", "a", 2),
        c("dup", "a", 3, started="2026-01-01T00:00:00"),
        c("new", "a", 3, started="2026-01-01T00:00:05"),
        c("gone", "z", 3),
    ]
    steps = plan_serving(observed, 3, ["a"], stopped=False)
    assert steps == [
        Step("adopt", "a", "new"),
        Step("remove", "a", "old", planner.NOT_WANTED),
        Step("remove", "a", "dup", planner.DUPLICATE),
        Step("remove", "z", "gone", planner.NOT_WANTED),
    ]


def test_no_serving_revision_removes_everything() -> None:
    steps = plan_serving([c("1", "a", 1)], None, [], stopped=False)
    assert steps == [Step("remove", "a", "1", planner.NOT_WANTED)]


def test_complete_revision_needs_every_server_running() -> None:
    observed = [c("1", "a", 4), c("2", "b", 4, "exited"), c("3", "b", 3)]
    assert complete_revision(observed, 4, ["a", "b"]) is None
    full = complete_revision([*observed, c("4", "b", 4, started="2026-01-02")], 4, ["a", "b"])
    assert full is not None
    assert {k: v.id for k, v in full.items()} == {"a": "1", "b": "4"}


# -- after the engine's return (plan_engine_return) -------------------------------------------


def test_after_the_engine_returns_each_server_is_kept_adopted_or_restarted() -> None:
    observed = [
        c("1", "http", 3),  # still running (live-restore): its runner goes on
        c("2", "stdio", 3),  # still running: a new runner re-attaches
        c("3", "gone", 3, "exited"),  # stopped with the daemon: restarted
        c("4", "http", 2),  # an old revision's leftover
    ]
    held = {
        "http": planner.Held("1", "running", keepable=True),
        "stdio": planner.Held("2", "running", keepable=False),
        "gone": planner.Held("3", "running", keepable=True),
        "lost": planner.Held("9", "running", keepable=True),  # its container vanished
    }
    steps = planner.plan_engine_return(observed, 3, ["http", "stdio", "gone", "lost"], held)
    assert steps == [
        Step("keep", "http", "1"),
        Step("adopt", "stdio", "2"),
        Step("restart", "gone", "3", planner.EXITED),
        Step("restart", "lost", "9", planner.MISSING),
        Step("remove", "http", "4", planner.NOT_WANTED),
    ]


def test_after_the_engine_returns_given_up_and_stopped_servers_are_left_alone() -> None:
    observed = [c("1", "a", 3, "exited"), c("2", "b", 3, "exited"), c("5", "b", 3, "exited")]
    held = {
        "a": planner.Held("1", "failed", keepable=False),
        "b": planner.Held("2", "stopped", keepable=False),
    }
    steps = planner.plan_engine_return(observed, 3, ["a", "b"], held)
    assert steps == [
        Step("leave", "a", "1", "failed"),
        Step("leave", "b", "2", "stopped"),
        Step("remove", "b", "5", planner.DUPLICATE),
    ]
