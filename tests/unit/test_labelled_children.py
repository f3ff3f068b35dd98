"""Metric children looked up once per label set stay the exported ones."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

from dtma.observability.metrics import LabelledChildren


def test_a_remembered_child_counts_into_the_exported_series() -> None:
    registry = CollectorRegistry()
    counter = Counter("t_total", "t", ["a", "b"], registry=registry)
    children = LabelledChildren(counter, limit=2)
    children("x", "1").inc()
    assert children("x", "1") is children("x", "1")
    children("y", "2").inc(2)
    children("z", "3").inc()  # past the limit: forgotten, still the same series
    children("x", "1").inc()
    text = generate_latest(registry).decode()
    assert 't_total{a="x",b="1"} 2.0' in text
    assert 't_total{a="y",b="2"} 2.0' in text
    assert 't_total{a="z",b="3"} 1.0' in text
