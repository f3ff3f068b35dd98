"""GET /v1/toolboxes' encoded answer is reused only while every value in it is unchanged: a
change of phase, health, restarts, revision, container or tools shows in the next answer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from dtma.engine.status_view import ListingCache, status_fields, toolbox_status
from dtma.engine.toolbox_runner import ToolboxRunner


@dataclass
class Container:
    id: str


@dataclass
class Runner:
    name: str
    revision: int = 1
    container: Container = field(default_factory=lambda: Container("c1"))
    state: str = "running"
    health: str = "healthy"
    restarts: int = 0
    endpoint: str | None = None
    tools: list[str] = field(default_factory=lambda: ["get_current_time"])
    last_error: str | None = None


@dataclass
class Toolbox:
    servers: dict[str, Runner]
    gate_runners: dict[str, Runner] = field(default_factory=dict)
    phase: str = "healthy"


def redact(text: str, limit: int) -> str:
    return text.replace("s3cret", "***")[:limit]


def _rows(ids: list[str]) -> list[tuple[str, str, int | None, float, int | None]]:
    return [(i, "healthy", 1, 100.0, 1) for i in ids]


def _encode(cache: ListingCache, toolboxes: dict[str, Toolbox]) -> bytes:
    runners = cast(dict[str, ToolboxRunner], toolboxes)
    return cache.encode([status_fields(r, runners.get(r[0])) for r in _rows(list(toolboxes))])


def _items(body: bytes) -> list[dict[str, Any]]:
    return list(json.loads(body)["items"])


def test_the_encoded_listing_equals_the_statuses() -> None:
    toolboxes = {"a": Toolbox({"time": Runner("time", last_error="boom s3cret")}), "b": Toolbox({})}
    body = _encode(ListingCache(redact), toolboxes)
    runners = cast(dict[str, ToolboxRunner], toolboxes)
    assert _items(body) == [toolbox_status(r, runners[r[0]], redact) for r in _rows(["a", "b"])]
    assert _items(body)[0]["servers"][0]["last_error"] == "boom ***"


def test_an_unchanged_listing_is_not_encoded_again() -> None:
    cache = ListingCache(redact)
    toolboxes = {"a": Toolbox({"time": Runner("time")})}
    assert _encode(cache, toolboxes) is _encode(cache, toolboxes)


@pytest.mark.parametrize(
    "change",
    [
        lambda tb: setattr(tb, "phase", "degraded"),
        lambda tb: setattr(tb.servers["time"], "health", "unhealthy"),
        lambda tb: setattr(tb.servers["time"], "state", "restarting"),
        lambda tb: setattr(tb.servers["time"], "restarts", 1),
        lambda tb: setattr(tb.servers["time"], "revision", 2),
        lambda tb: setattr(tb.servers["time"], "container", Container("c2")),
        lambda tb: setattr(tb.servers["time"], "last_error", "probe_failed"),
        lambda tb: tb.servers["time"].tools.append("convert_time"),  # mutated in place
        lambda tb: tb.gate_runners.update(time=Runner("time", revision=2)),
        lambda tb: tb.servers.clear(),
    ],
)
def test_every_change_shows_in_the_next_answer(change: Any) -> None:
    cache = ListingCache(redact)
    toolboxes = {"a": Toolbox({"time": Runner("time")}), "b": Toolbox({"time": Runner("time")})}
    before = _encode(cache, toolboxes)
    change(toolboxes["a"])
    after = _encode(cache, toolboxes)
    assert after != before
    runners = cast(dict[str, ToolboxRunner], toolboxes)
    assert _items(after) == [toolbox_status(r, runners[r[0]], redact) for r in _rows(["a", "b"])]


def test_a_changed_db_row_or_a_deleted_toolbox_shows_too() -> None:
    cache = ListingCache(redact)
    toolboxes = {"a": Toolbox({"time": Runner("time")}), "b": Toolbox({})}
    runners = cast(dict[str, ToolboxRunner], toolboxes)
    _encode(cache, toolboxes)
    newer = [("a", "healthy", 2, 101.0, 3)]  # a new revision, b deleted
    body = cache.encode([status_fields(r, runners.get(r[0])) for r in newer])
    [item] = _items(body)
    assert (item["id"], item["revision"], item["stable_revision"]) == ("a", 3, 2)
