"""MetricsObserver: rollbacks are counted once each, labelled by what triggered them."""

from __future__ import annotations

from dtma.domain.records import EventRecord
from dtma.observability.metrics import Metrics, MetricsObserver


def _event(cursor: int, kind: str, op: str, reason: str) -> EventRecord:
    return EventRecord(cursor, float(cursor), kind, "tb", None, 2, op, reason, "")


def _rollbacks(m: Metrics, trigger: str) -> float:
    value = m.registry.get_sample_value("dtma_rollbacks_total", {"trigger": trigger})
    assert value is not None, f"no series for trigger={trigger}"
    return value


async def test_both_trigger_series_exist_before_any_rollback() -> None:
    m = Metrics()
    assert (_rollbacks(m, "auto"), _rollbacks(m, "manual")) == (0.0, 0.0)


async def test_a_failed_gate_counts_as_auto_and_an_asked_rollback_as_manual() -> None:
    m = Metrics()
    obs = MetricsObserver(m)
    # A rollout whose gate fails and is reverted by the agent itself.
    await obs.observe(_event(1, "rollout_started", "op1", "start_first"))
    await obs.observe(_event(2, "rollout_failed", "op1", "probe_failed"))
    await obs.observe(_event(3, "operation_finished", "op1", "rolled_back"))
    assert (_rollbacks(m, "auto"), _rollbacks(m, "manual")) == (1.0, 0.0)
    # A rollback someone asked for (POST /rollback), which succeeds.
    await obs.observe(_event(4, "rollback_started", "op2", "start_first"))
    await obs.observe(_event(5, "rollback_passed", "op2", ""))
    await obs.observe(_event(6, "operation_finished", "op2", "succeeded"))
    assert (_rollbacks(m, "auto"), _rollbacks(m, "manual")) == (1.0, 1.0)


async def test_a_stop_first_revert_is_one_auto_rollback_not_a_manual_one() -> None:
    m = Metrics()
    obs = MetricsObserver(m)
    await obs.observe(_event(1, "rollout_started", "op1", "stop_first"))
    await obs.observe(_event(2, "rollback_started", "op1", "stop_first_revert"))
    await obs.observe(_event(3, "operation_finished", "op1", "rolled_back"))
    assert (_rollbacks(m, "auto"), _rollbacks(m, "manual")) == (1.0, 0.0)
