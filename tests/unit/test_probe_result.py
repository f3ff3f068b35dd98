from __future__ import annotations

from dtma.domain import probe
from dtma.domain.probe import ProbeResult, check_expected_tools


def test_all_expected_tools_present_is_healthy() -> None:
    r = check_expected_tools(["a", "b", "c"], ["a", "c"], 3.5)
    assert r == ProbeResult(True, probe.OK, 3.5, ("a", "b", "c"))


def test_missing_tools_are_named_in_order() -> None:
    r = check_expected_tools(["a"], ["z", "a", "y"], 1.0)
    assert not r.healthy
    assert r.reason == probe.MISSING_TOOLS
    assert r.missing_tools == ("z", "y")
    assert r.detail == "missing tools: z, y"
    assert r.tools == ("a",)


def test_no_expectations_means_any_listing_is_healthy() -> None:
    assert check_expected_tools([], [], 0.1).healthy


def test_a_tool_listed_twice_is_a_name_collision() -> None:
    r = check_expected_tools(["a", "b", "a"], ["b"], 1.0)
    assert not r.healthy
    assert r.reason == probe.TOOL_NAME_COLLISION
    assert r.detail == "tools listed more than once: a"
    assert r.tools == ("a", "b", "a")
