"""The group gate: exact times from a fake clock, no sleeps."""

from __future__ import annotations

import pytest

from dtma.domain import gate
from dtma.domain import probe as reasons
from dtma.domain.gate import GateState, GateTracker
from dtma.domain.probe import ProbeResult

OK = ProbeResult.ok(1.0, ["t"])
REFUSED = ProbeResult.failed(reasons.CONNECT_FAILED, 1.0, "refused")
MISSING = ProbeResult(False, reasons.MISSING_TOOLS, 1.0, ("t",), "missing tools: x", ("x",))


def tracker(servers: tuple[str, ...] = ("a", "b"), threshold: int = 3) -> GateTracker:
    return GateTracker(
        servers,
        started_at=0.0,
        min_healthy_time=5.0,
        healthy_deadline=30.0,
        failure_threshold=dict.fromkeys(servers, threshold),
    )


def test_passes_only_when_every_server_is_healthy_for_min_healthy_time() -> None:
    g = tracker()
    g.probe("a", OK, 1.0)
    g.probe("b", OK, 3.0)
    assert g.decide(6.0).state is GateState.PENDING  # b healthy for 3s only
    assert g.decide(7.99).state is GateState.PENDING
    d = g.decide(8.0)
    assert d.state is GateState.PASSED
    assert d.reason == gate.GATE_PASSED


def test_a_failure_resets_that_servers_clock() -> None:
    g = tracker()
    g.probe("a", OK, 0.0)
    g.probe("b", OK, 0.0)
    g.probe("a", ProbeResult.failed(reasons.TIMEOUT, 5.0), 4.0)  # a blip, under the threshold
    g.probe("a", OK, 4.5)
    assert g.decide(5.0).state is GateState.PENDING
    assert g.decide(9.49).state is GateState.PENDING
    assert g.decide(9.5).state is GateState.PASSED


def test_container_exit_fails_at_once_naming_the_server() -> None:
    g = tracker()
    g.probe("a", OK, 0.0)
    g.container_exited("b", 1)
    d = g.decide(0.5)
    assert (d.state, d.reason, d.server, d.detail) == (
        GateState.FAILED,
        gate.CONTAINER_EXITED,
        "b",
        "exit code 1",
    )


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        (lambda g: g.start_failed("a", "image not found"), gate.START_FAILED),
        (lambda g: g.secrets_failed("a", "secret/x: permission denied"), gate.SECRETS_FAILED),
    ],
)
def test_start_and_secret_failures_fail_at_once(report: object, reason: str) -> None:
    g = tracker()
    report(g)  # type: ignore[operator]
    assert g.decide(0.0).reason == reason
    assert g.decide(0.0).server == "a"


def test_refusals_before_the_first_answer_do_not_count_until_the_deadline() -> None:
    g = tracker(threshold=3)
    for t in range(20):
        g.probe("a", REFUSED, float(t))
    g.probe("b", OK, 0.0)
    assert g.decide(29.9).state is GateState.PENDING
    d = g.decide(30.0)
    assert (d.state, d.reason, d.server) == (GateState.FAILED, gate.DEADLINE_EXCEEDED, "a")
    assert "connect_failed: refused" in d.detail


def test_after_a_first_answer_failures_past_the_threshold_fail() -> None:
    g = tracker(threshold=2)
    g.probe("a", OK, 0.0)
    g.probe("a", REFUSED, 1.0)
    assert g.decide(1.0).state is GateState.PENDING
    g.probe("a", REFUSED, 1.25)
    d = g.decide(1.25)
    assert (d.reason, d.server) == (gate.PROBE_FAILED, "a")
    assert "2 consecutive probe failures" in d.detail


def test_missing_tools_count_from_the_first_probe() -> None:
    g = tracker(threshold=2)
    g.probe("a", MISSING, 0.0)
    g.probe("a", MISSING, 0.25)
    d = g.decide(0.25)
    assert (d.reason, d.server) == (gate.PROBE_FAILED, "a")
    assert "missing tools: x" in d.detail


def test_first_failure_wins_and_the_decision_is_sticky() -> None:
    g = tracker()
    g.container_exited("a", 137)
    g.container_exited("b", 1)
    g.probe("b", OK, 0.0)
    assert g.decide(100.0).server == "a"
    assert g.decide(100.0).reason == gate.CONTAINER_EXITED


def test_each_servers_deadline_counts_from_its_own_start() -> None:
    g = GateTracker(
        ("a", "b"),
        started_at=None,
        min_healthy_time=5.0,
        healthy_deadline=30.0,
        failure_threshold={"a": 3, "b": 3},
    )
    assert g.deadline("a") is None  # not started (waiting for admission): no deadline ticks
    assert g.decide(1000.0).state is GateState.PENDING
    g.server_started("a", 1000.0)
    g.probe("a", OK, 1001.0)
    assert g.decide(1040.0).state is GateState.PENDING  # b has not started yet
    g.server_started("b", 1050.0)
    g.probe("b", REFUSED, 1051.0)
    assert g.deadline("b") == 1080.0
    assert g.decide(1079.9).state is GateState.PENDING
    d = g.decide(1080.0)
    assert (d.state, d.reason, d.server) == (GateState.FAILED, gate.DEADLINE_EXCEEDED, "b")
    assert "within 30s of its start" in d.detail


def test_a_late_started_server_passes_after_its_own_min_healthy_time() -> None:
    g = GateTracker(
        ("a", "b"),
        started_at=None,
        min_healthy_time=5.0,
        healthy_deadline=30.0,
        failure_threshold={"a": 3, "b": 3},
    )
    g.server_started("a", 0.0)
    g.probe("a", OK, 1.0)
    g.server_started("b", 100.0)  # long after a's deadline would have passed from the start
    g.probe("b", OK, 101.0)
    assert g.decide(105.9).state is GateState.PENDING
    assert g.decide(106.0).state is GateState.PASSED
