"""Metric children looked up once per label set stay the exported ones, and a deleted toolbox's
series go (the remembered children with them, so later counts are exported again); the offered
sets the call journal remembers for its labels are bounded."""

from __future__ import annotations

import pytest
from prometheus_client import Counter, generate_latest

from dtma.domain.access import ToolCall
from dtma.domain.records import EventRecord
from dtma.gateway import call_journal
from dtma.gateway.call_journal import CallJournal
from dtma.observability.metrics import LabelledChildren, Metrics, MetricsObserver
from tests.fakes_gateway import FailingCallStore


def test_a_remembered_child_counts_into_the_exported_series() -> None:
    metrics = Metrics()
    counter = Counter("t_total", "t", ["a", "b"], registry=metrics.registry)
    children = LabelledChildren(counter, metrics, limit=2)
    children("x", "1").inc()
    assert children("x", "1") is children("x", "1")
    children("y", "2").inc(2)
    children("z", "3").inc()  # past the limit: forgotten, still the same series
    children("x", "1").inc()
    text = generate_latest(metrics.registry).decode()
    assert 't_total{a="x",b="1"} 2.0' in text
    assert 't_total{a="y",b="2"} 2.0' in text
    assert 't_total{a="z",b="3"} 1.0' in text


def _call(toolbox: str) -> ToolCall:
    return ToolCall(1.0, toolbox, "time", "now", "agent", 0.002, "ok", 2, 40)


def _deleted(toolbox: str) -> EventRecord:
    return EventRecord(9, 9.0, "toolbox_deleted", toolbox, None, None, None, "", "")


def _restarted(toolbox: str) -> EventRecord:
    return EventRecord(8, 8.0, "server_restarted", toolbox, "time", 1, "op", "", "")


async def test_a_deleted_toolboxs_series_are_removed_and_come_back_if_it_does() -> None:
    metrics = Metrics()
    observer = MetricsObserver(metrics)
    journal = CallJournal(FailingCallStore(), metrics, lambda _: frozenset({"time__now"}))
    for toolbox in ("gone", "kept"):
        journal.record(_call(toolbox))
        await observer.observe(_restarted(toolbox))

    def series(toolbox: str) -> list[str]:
        text = generate_latest(metrics.registry).decode()
        return [line for line in text.splitlines() if f'toolbox="{toolbox}"' in line]

    assert len(series("gone")) > 3  # calls, restarts and every bucket of the latency
    kept_before = series("kept")

    await observer.observe(_deleted("gone"))
    assert series("gone") == []
    assert series("kept") == kept_before

    journal.record(_call("gone"))  # the id in use again: counted from zero, and exported
    calls = metrics.registry.get_sample_value(
        "dtma_tool_calls_total",
        {"toolbox": "gone", "server": "time", "tool": "now", "outcome": "ok"},
    )
    assert calls == 1.0
    kept = metrics.registry.get_sample_value(
        "dtma_tool_calls_total",
        {"toolbox": "kept", "server": "time", "tool": "now", "outcome": "ok"},
    )
    assert kept == 1.0


def test_the_offered_sets_remembered_for_labels_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(call_journal.time, "monotonic", lambda: clock[0])
    asked: list[str] = []

    def offered(toolbox: str) -> frozenset[str]:
        asked.append(toolbox)
        return frozenset({"time__now"})

    journal = CallJournal(FailingCallStore(), Metrics(), offered)
    for n in range(call_journal.OFFERED_KEPT):
        journal.record(_call(f"tb-{n}"))
    clock[0] += call_journal.OFFERED_TTL_S  # every set remembered is stale now
    journal.record(_call("fresh"))
    assert len(journal._offered_seen) == 1
    journal.record(_call("fresh"))
    assert asked.count("fresh") == 1  # still remembered for its TTL
