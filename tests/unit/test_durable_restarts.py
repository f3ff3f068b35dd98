"""The restart budget survives an agent restart: history out, history in, across clocks."""

from __future__ import annotations

import random

from dtma.domain.restart import RestartTracker, Verdict, from_wall, to_wall
from dtma.spec.models import Restart


def test_a_restored_history_keeps_the_budget_spent() -> None:
    policy = Restart(attempts=2, interval=300, delay=1, max_delay=5, mode="fail")
    first = RestartTracker(policy, random.Random(1))
    assert first.on_failure(100.0).verdict is Verdict.RESTART
    assert first.on_failure(110.0).verdict is Verdict.RESTART
    # A new agent process: another monotonic clock, the same wall clock.
    saved = to_wall(first.history(), now=120.0, wall_now=1_000_000.0)
    assert saved == [999_980.0, 999_990.0]
    second = RestartTracker(policy, random.Random(1))
    second.restore(from_wall(saved, now=5.0, wall_now=1_000_030.0))
    assert second.attempts_in_window == 2
    assert second.on_failure(6.0).verdict is Verdict.GIVE_UP  # not a fresh budget


def test_a_restored_history_still_leaves_the_window() -> None:
    policy = Restart(attempts=1, interval=60, delay=1, max_delay=5, mode="fail")
    tracker = RestartTracker(policy, random.Random(1))
    # Saved 100 s ago (wall clock): outside the 60 s window now.
    tracker.restore(from_wall([1_000.0], now=50.0, wall_now=1_100.0))
    decision = tracker.on_failure(50.0)
    assert decision.verdict is Verdict.RESTART
    assert tracker.history() == (50.0,)


def test_a_fresh_tracker_has_no_history() -> None:
    tracker = RestartTracker(Restart(), random.Random(1))
    assert tracker.history() == ()
    tracker.restore([])
    assert tracker.attempts_in_window == 0
