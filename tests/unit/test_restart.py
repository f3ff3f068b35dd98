"""Restart backoff: exponential, capped, jittered 0-25%, bounded by attempts within interval."""

from __future__ import annotations

import random

from dtma.domain import restart
from dtma.domain.restart import RestartTracker, Verdict
from dtma.spec.models import Restart


class MaxRandom(random.Random):
    """uniform() returns its upper bound: the largest jitter."""

    def uniform(self, a: float, b: float) -> float:
        return b


class NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


def test_delays_double_and_are_capped() -> None:
    t = RestartTracker(Restart(attempts=10, interval=3600, delay=1, max_delay=5), NoJitter())
    delays = [t.on_failure(float(i)).delay for i in range(6)]
    assert delays == [1, 2, 4, 5, 5, 5]


def test_jitter_adds_at_most_a_quarter() -> None:
    t = RestartTracker(Restart(attempts=10, interval=3600, delay=2, max_delay=60), MaxRandom())
    assert [t.on_failure(0.0).delay for _ in range(3)] == [2.5, 5.0, 10.0]
    seeded = RestartTracker(
        Restart(attempts=100, interval=3600, delay=1, max_delay=1), random.Random(7)
    )
    assert all(1.0 <= seeded.on_failure(0.0).delay <= 1.25 for _ in range(50))


def test_gives_up_after_attempts_within_the_interval() -> None:
    t = RestartTracker(
        Restart(attempts=3, interval=300, delay=1, max_delay=60, mode="fail"), NoJitter()
    )
    decisions = [t.on_failure(float(i)) for i in range(4)]
    assert [d.verdict for d in decisions] == [Verdict.RESTART] * 3 + [Verdict.GIVE_UP]
    assert [d.attempt for d in decisions] == [1, 2, 3, 3]
    assert decisions[-1].reason == restart.EXHAUSTED


def test_old_attempts_leave_the_window() -> None:
    t = RestartTracker(Restart(attempts=2, interval=10, delay=1, max_delay=60), NoJitter())
    t.on_failure(0.0)
    t.on_failure(1.0)
    d = t.on_failure(10.5)  # the attempt at 0.0 has left the 10 s window
    assert d.verdict is Verdict.RESTART
    assert d.delay == 2  # one attempt still in the window, so the second step of the backoff


def test_delay_mode_waits_for_the_window_instead_of_giving_up() -> None:
    t = RestartTracker(
        Restart(attempts=1, interval=60, delay=1, max_delay=60, mode="delay"), NoJitter()
    )
    t.on_failure(0.0)
    d = t.on_failure(20.0)
    assert (d.verdict, d.reason, d.delay) == (Verdict.RESTART, restart.WAIT_WINDOW, 40.0)


def test_zero_attempts_gives_up_at_once() -> None:
    t = RestartTracker(Restart(attempts=0), NoJitter())
    assert t.on_failure(0.0).verdict is Verdict.GIVE_UP


def test_a_refunded_attempt_gives_the_budget_back() -> None:
    t = RestartTracker(Restart(attempts=1, interval=600, delay=1), NoJitter())
    assert t.on_failure(0.0).verdict is Verdict.RESTART
    t.refund()  # that failure was the engine's
    assert t.on_failure(1.0).verdict is Verdict.RESTART
    assert t.on_failure(2.0).verdict is Verdict.GIVE_UP
    t.refund()
    t.refund()  # nothing left to take back: no error
    assert t.history() == ()


def test_spent_says_what_the_next_failure_would_decide_and_changes_nothing() -> None:
    for mode in ("fail", "delay"):
        t = RestartTracker(Restart(attempts=2, interval=60, delay=1, mode=mode), NoJitter())
        t.restore([0.0, 10.0])
        for now in (10.0, 59.0, 60.0, 70.0):
            before = t.history()
            expected = t.on_failure(now).verdict is Verdict.GIVE_UP
            t.restore(before)
            assert t.spent(now) is expected, (mode, now)
            assert t.history() == before
