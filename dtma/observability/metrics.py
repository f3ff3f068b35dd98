"""Prometheus metrics, in a registry of the agent's own (not the process-global default).

Counters and histograms are fed by the event journal (MetricsObserver), by the API middleware
(route templates, never raw paths, so cardinality stays bounded), and by the Docker, Vault and
probe adapters. Phase and health gauges are read from the engine at scrape time; the series
labelled with a toolbox (restarts, tool calls) are removed when it is deleted (`forget_toolbox`),
so a host that churns toolboxes does not grow its scrape without bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dtma.domain.records import EventRecord
from dtma.domain.tool_pins import POLICY_OF_REASON

PHASES = ("deploying", "healthy", "degraded", "failed", "stopped", "deleting")
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 300)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.rollouts = Counter("dtma_rollouts_total", "Rollouts by result", ["result"], registry=r)
        self.rollbacks = Counter(
            "dtma_rollbacks_total",
            "Rollbacks: trigger=auto when a failed gate reverted a rollout, manual when asked",
            ["trigger"],
            registry=r,
        )
        for trigger in ("auto", "manual"):
            self.rollbacks.labels(trigger)  # both series exist from the start, at 0
        self.rollout_duration = Histogram(
            "dtma_rollout_duration_seconds",
            "From rollout start to its end",
            registry=r,
            buckets=DURATION_BUCKETS,
        )
        self.gate_duration = Histogram(
            "dtma_gate_duration_seconds",
            "From the last server start to the gate's decision",
            ["result"],
            registry=r,
            buckets=DURATION_BUCKETS,
        )
        self.probe_latency = Histogram(
            "dtma_probe_latency_seconds",
            "MCP probe latency",
            ["transport"],
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.probe_failures = Counter(
            "dtma_probe_failures_total",
            "Failed MCP probes by reason",
            ["transport", "reason"],
            registry=r,
        )
        self.restarts = Counter(
            "dtma_container_restarts_total",
            "Server containers restarted",
            ["toolbox", "server"],
            registry=r,
        )
        self.vault_requests = Counter(
            "dtma_vault_requests_total", "Vault reads by result", ["result"], registry=r
        )
        self.vault_renew_errors = Counter(
            "dtma_vault_token_renewal_errors_total",
            "Failed renewals of the agent's Vault token",
            registry=r,
        )
        self.docker_errors = Counter(
            "dtma_docker_api_errors_total", "Docker API errors by class", ["error"], registry=r
        )
        self.api_requests = Counter(
            "dtma_api_requests_total", "API requests", ["route", "method", "status"], registry=r
        )
        self.api_latency = Histogram(
            "dtma_api_request_duration_seconds",
            "API request latency",
            ["route", "method"],
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.task_failures = Counter(
            "dtma_background_task_failures_total",
            "Background tasks (re-list, event watcher, server supervision, phase writes, "
            "operations, recoveries) that ended unexpectedly; supervised loops are restarted",
            ["task"],
            registry=r,
        )
        self.tool_calls = Counter(
            "dtma_tool_calls_total",
            "tools/call requests through the toolbox MCP endpoints, by outcome "
            "(ok, error, unavailable, denied, not_found); unknown names count as 'other'",
            ["toolbox", "server", "tool", "outcome"],
            registry=r,
        )
        self.tool_call_duration = Histogram(
            "dtma_tool_call_duration_seconds",
            "tools/call latency through the toolbox MCP endpoints",
            ["toolbox", "server"],
            registry=r,
            buckets=CALL_BUCKETS,
        )
        self.tool_definition_changes = Counter(
            "dtma_tool_definition_changes_total",
            "Tool definitions a serving server changed since its revision's gate, by the "
            "toolbox's gateway.pin policy (block: withheld, warn: still offered)",
            ["toolbox", "server", "policy"],
            registry=r,
        )
        self.engine_up = Gauge(
            "dtma_engine_up", "1 while the Docker engine answers the agent's pings", registry=r
        )
        self.engine_outages = Counter(
            "dtma_engine_outages_total",
            "Times the Docker engine stopped answering; restarts are paused meanwhile and no "
            "server's restart budget is charged",
            registry=r,
        )
        self.errors = Counter(
            "dtma_errors_total", "Failures recorded in the error journal", ["category"], registry=r
        )
        self.controller_heartbeats = Counter(
            "dtma_controller_heartbeats_total",
            "Heartbeat attempts to the controller, by outcome (ok, unreachable, timeout, "
            "server_error, unauthorized, rejected, redirect, bad_answer)",
            ["outcome"],
            registry=r,
        )
        self._heartbeat_age: Callable[[], float] | None = None
        self._heartbeat_interval = 0.0
        self._state: Callable[[], Iterable[tuple[str, str, Iterable[tuple[str, bool]]]]] | None = (
            None
        )
        self.registry.register(_StateCollector(self))
        self.removals = 0  # bumped by forget_toolbox: remembered children may be stale

    def forget_toolbox(self, toolbox: str) -> None:
        """Remove every series labelled with this toolbox."""
        for metric in (
            self.restarts,
            self.tool_calls,
            self.tool_call_duration,
            self.tool_definition_changes,
        ):
            metric.remove_by_labels({"toolbox": toolbox})
        self.removals += 1

    def watch_state(
        self, source: Callable[[], Iterable[tuple[str, str, Iterable[tuple[str, bool]]]]]
    ) -> None:
        """source() -> [(toolbox, phase, [(server, healthy)])], read at scrape time."""
        self._state = source

    def watch_heartbeat(self, age: Callable[[], float], interval: float) -> None:
        """age() -> seconds since the controller last acknowledged a heartbeat. Exported, with
        the interval, only once a controller is configured (the stale alert compares them)."""
        self._heartbeat_age = age
        self._heartbeat_interval = interval


class _StateCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        phase = GaugeMetricFamily(
            "dtma_toolbox_phase", "1 for the toolbox's current phase", labels=["toolbox", "phase"]
        )
        healthy = GaugeMetricFamily(
            "dtma_server_healthy", "1 if the server passes its probes", labels=["toolbox", "server"]
        )
        source = self._metrics._state
        for toolbox, current, servers in source() if source else []:
            for p in PHASES:
                phase.add_metric([toolbox, p], 1.0 if p == current else 0.0)
            for server, ok in servers:
                healthy.add_metric([toolbox, server], 1.0 if ok else 0.0)
        yield phase
        yield healthy
        if self._metrics._heartbeat_age is not None:
            yield GaugeMetricFamily(
                "dtma_controller_heartbeat_age_seconds",
                "Seconds since the controller last acknowledged a heartbeat (since the agent "
                "started, while none was)",
                value=self._metrics._heartbeat_age(),
            )
            yield GaugeMetricFamily(
                "dtma_controller_heartbeat_interval_seconds",
                "DTMA_HEARTBEAT_INTERVAL",
                value=self._metrics._heartbeat_interval,
            )


class MetricsObserver:
    """Turns journal events into counters and durations. One per agent."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
        self._started: dict[str, float] = {}
        self._last_start: dict[str, float] = {}

    async def observe(self, event: EventRecord) -> None:
        m, op = self._m, event.operation or ""
        if event.kind in ("rollout_started", "rollback_started"):
            self._started.setdefault(op, event.ts)
            if event.kind == "rollback_started" and event.reason != "stop_first_revert":
                m.rollbacks.labels("manual").inc()  # a stop_first revert ends rolled_back
        elif event.kind in ("server_started", "container_adopted"):
            self._last_start[op] = event.ts
        elif event.kind in ("rollout_passed", "rollout_failed"):
            result = "passed" if event.kind == "rollout_passed" else "failed"
            if op in self._last_start:
                m.gate_duration.labels(result).observe(event.ts - self._last_start.pop(op))
        elif event.kind == "operation_finished" and op in self._started:
            m.rollout_duration.observe(event.ts - self._started.pop(op))
            m.rollouts.labels(event.reason or "unknown").inc()
            if event.reason == "rolled_back":
                m.rollbacks.labels("auto").inc()
            self._last_start.pop(op, None)
        elif event.kind == "server_restarted" and event.toolbox and event.server:
            m.restarts.labels(event.toolbox, event.server).inc()
        elif event.kind == "tool_definition_changed" and event.toolbox and event.server:
            policy = POLICY_OF_REASON.get(event.reason, "unknown")
            m.tool_definition_changes.labels(event.toolbox, event.server, policy).inc()
        elif event.kind == "toolbox_deleted" and event.toolbox:
            m.forget_toolbox(event.toolbox)


METRICS = Metrics()


class LabelledChildren:
    """`metric.labels(...)`, remembered per label tuple: prometheus-client takes a lock and builds
    its key on every call, a cost on the MCP endpoint's hot path. A remembered child is the one
    exported until `owner.forget_toolbox` removes series; then all are looked up afresh (a
    removed child would count where nobody scrapes). Bounded: forgotten (not removed) past
    `limit`."""

    def __init__(self, metric: Any, owner: Metrics, limit: int = 10_000) -> None:
        self._metric = metric
        self._owner = owner
        self._removals = owner.removals
        self._limit = limit
        self._seen: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        if self._removals != self._owner.removals:
            self._removals = self._owner.removals
            self._seen.clear()
        child = self._seen.get(labels)
        if child is None:
            if len(self._seen) >= self._limit:
                self._seen.clear()
            child = self._seen[labels] = self._metric.labels(*labels)
        return child


def observe_error(category: str) -> None:
    METRICS.errors.labels(category).inc()


def route_label(request: Any) -> str:
    """The route template ("/v1/toolboxes/{id}"), or "unmatched": never the raw path."""
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    canonical = getattr(resource, "canonical", None)
    return (
        str(canonical)
        if canonical and getattr(info, "http_exception", None) is None
        else "unmatched"
    )
