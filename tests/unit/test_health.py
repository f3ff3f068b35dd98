"""The one health tracker (domain/health.py) that the gate and steady state share."""

from __future__ import annotations

from dtma.domain import probe as reasons
from dtma.domain.health import HEALTHY, UNHEALTHY, UNKNOWN, HealthTracker
from dtma.domain.probe import ProbeResult

OK = ProbeResult.ok(1.0)
REFUSED = ProbeResult.failed(reasons.CONNECT_FAILED, 1.0, "refused")
NO_TOOL = ProbeResult.failed(reasons.MISSING_TOOLS, 1.0, "missing tools: x")


def test_unknown_until_the_first_success_then_healthy() -> None:
    h = HealthTracker(threshold=3)
    assert h.status == UNKNOWN
    assert not h.observe(REFUSED, 1.0)
    assert h.status == UNKNOWN
    assert not h.observe(OK, 2.0)
    assert (h.status, h.ever_healthy, h.healthy_since) == (HEALTHY, True, 2.0)


def test_threshold_consecutive_failures_make_it_unhealthy_and_one_success_heals() -> None:
    h = HealthTracker(threshold=3)
    h.observe(OK, 0.0)
    assert not h.observe(REFUSED, 1.0)
    assert not h.observe(REFUSED, 2.0)
    assert h.status == HEALTHY  # below the threshold it stays healthy
    assert h.observe(REFUSED, 3.0)
    assert (h.status, h.failures, h.over_threshold) == (UNHEALTHY, 3, True)
    assert h.last_failure == "connect_failed: refused"
    assert not h.observe(OK, 4.0)
    assert (h.status, h.failures, h.streak) == (HEALTHY, 0, 0)


def test_a_success_between_failures_resets_the_count() -> None:
    h = HealthTracker(threshold=2)
    h.observe(OK, 0.0)
    h.observe(REFUSED, 1.0)
    h.observe(OK, 2.0)
    assert not h.observe(REFUSED, 3.0)
    assert h.observe(REFUSED, 4.0)


def test_refusals_while_starting_do_not_count_but_answers_do() -> None:
    h = HealthTracker(threshold=2)
    for t in range(5):
        assert not h.observe(REFUSED, float(t))
    assert (h.failures, h.streak) == (0, 5)
    assert not h.observe(NO_TOOL, 6.0)
    assert h.observe(NO_TOOL, 7.0)
    assert h.status == UNHEALTHY
    assert h.last_failure == "missing_tools: missing tools: x"


def test_the_healthy_streak_restarts_after_any_failure() -> None:
    h = HealthTracker(threshold=3)
    h.observe(OK, 10.0)
    h.observe(OK, 12.0)
    assert h.healthy_for(13.0) == 3.0
    h.observe(REFUSED, 14.0)
    assert h.healthy_for(15.0) == 0.0
    h.observe(OK, 16.0)
    assert h.healthy_for(17.0) == 1.0


def test_forgive_and_reset() -> None:
    h = HealthTracker(threshold=2)
    h.observe(OK, 0.0)
    h.observe(REFUSED, 1.0)
    h.forgive()
    assert (h.failures, h.streak, h.ever_healthy) == (0, 0, True)
    assert not h.observe(REFUSED, 2.0)
    h.reset()  # a new container
    assert (h.status, h.ever_healthy, h.healthy_since, h.last_failure) == (UNKNOWN, False, None, "")
    assert not h.observe(REFUSED, 3.0)
    assert not h.observe(REFUSED, 4.0)  # starting again: refusals do not count
