"""Exported tool names (`<server>__<tool>`) cannot collide: what is caught when (docs/gateway.md
"Naming"). At apply, server names are unique DNS labels, so a name holding `__` (server `a__b`
beside server `a` with a tool `b__c`) is refused with 422 naming the field; at run time, a
server listing one tool name twice fails its probe (so the gate) with tool_name_collision."""

from __future__ import annotations

import json

import pytest

from dtma.domain import probe
from dtma.domain.health import HealthTracker
from dtma.domain.probe import check_expected_tools
from dtma.errors import SpecInvalid
from dtma.gateway.routing import exported_name, split_name
from dtma.spec.validate import SpecPolicy, parse_spec


def server(name: str, tools: list[str]) -> dict[str, object]:
    return {"name": name, "image": "x:1", "health": {"expect_tools": tools}}


def test_a_server_name_that_would_make_prefixed_names_collide_is_refused_at_apply() -> None:
    body = json.dumps({"servers": [server("a", ["b__c"]), server("a__b", ["c"])]})
    with pytest.raises(SpecInvalid) as refused:
        parse_spec(body, SpecPolicy())
    assert [d["loc"] for d in refused.value.details] == [["servers", 1, "name"]]
    assert "DNS label" in refused.value.details[0]["msg"]


def test_with_dns_label_servers_the_first_separator_splits_every_exported_name_back() -> None:
    pairs = [("a", "b__c"), ("a", "_x"), ("a-b", "c"), ("ab", "c__"), ("a", "b")]
    names = [exported_name(s, t) for s, t in pairs]
    assert len(set(names)) == len(names)
    assert [split_name(n) for n in names] == pairs


def test_a_tool_listed_twice_counts_as_an_answer_toward_the_threshold() -> None:
    tracker = HealthTracker(threshold=2)
    result = check_expected_tools(["echo", "echo"], [], 1.0)
    assert result.reason == probe.TOOL_NAME_COLLISION
    assert not tracker.observe(result, now=0.0)
    assert tracker.observe(result, now=1.0)  # never healthy, yet past the threshold
    assert tracker.status == "unhealthy"
