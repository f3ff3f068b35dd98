"""domain/oauth.py: which toolboxes a verified token's claims reach, and how `gateway.access`
rules narrow the tools (the semantics docs/spec.md states)."""

from __future__ import annotations

from typing import Any

import pytest

from dtma.domain.oauth import claim_values, reaches, rule_matches, tool_permitted
from dtma.spec.models import AccessRule


def rule(claims: dict[str, Any], allow: list[str] | None = None, deny: list[str] | None = None):
    return AccessRule.model_validate(
        {"claims": claims, "tools": {"allow": allow or [], "deny": deny or []}}
    )


@pytest.mark.parametrize(
    ("claims", "name", "values"),
    [
        ({"scope": "a b  c"}, "scope", ("a", "b", "c")),
        ({"scp": ["a", "b c"]}, "scp", ("a", "b", "c")),
        ({"groups": ["a b"]}, "groups", ("a b",)),  # only scope claims split on spaces
        ({"admin": True, "level": 3}, "admin", ("true",)),
        ({"level": 3}, "level", ("3",)),
        ({"realm_access": {"roles": ["ops"]}}, "realm_access.roles", ("ops",)),
        ({"a.b": "flat"}, "a.b", ("flat",)),  # a claim of its own wins over the path
        ({"x": {"y": 1}}, "x", ()),  # an object is no value
        ({}, "missing", None),
    ],
)
def test_claim_values(claims: dict[str, Any], name: str, values: tuple[str, ...] | None) -> None:
    assert claim_values(claims, name) == values


def test_a_toolbox_is_reached_by_its_scope_or_by_a_named_claim() -> None:
    assert reaches({"scope": "openid toolbox:abc"}, "abc", None)
    assert reaches({"scp": ["toolbox:abc"]}, "abc", None)
    assert not reaches({"scope": "toolbox:abcd toolbox:ab"}, "abc", None)
    assert not reaches({"scope": "toolbox:abc"}, "abc", None, prefix="mcp:")
    assert reaches({"scope": "mcp:abc"}, "abc", None, prefix="mcp:")
    assert reaches({"toolboxes": ["x", "abc"]}, "abc", "toolboxes")
    assert not reaches({"scope": "toolbox:abc"}, "abc", "toolboxes")  # the claim rules alone
    assert not reaches({}, "abc", None)


def test_a_rule_matches_when_every_claim_it_names_matches() -> None:
    r = rule({"groups": "ops", "team": ["a", "b"]})
    assert rule_matches(r, {"groups": ["dev", "ops"], "team": "b"})
    assert not rule_matches(r, {"groups": ["ops"], "team": "c"})
    assert not rule_matches(r, {"groups": ["ops"]})  # a missing claim never matches
    assert rule_matches(rule({"scope": "notes:write"}), {"scope": "openid notes:write"})


def test_tools_are_the_union_of_the_matching_rules_and_closed_when_none_match() -> None:
    rules = [
        rule({"groups": "ops"}, allow=["time__*"]),
        rule({"groups": "notes"}, allow=["notes__*"], deny=["notes__delete_note"]),
    ]
    both = {"groups": ["ops", "notes"]}
    assert tool_permitted("time__now", rules, both)
    assert tool_permitted("notes__add_note", rules, both)
    assert not tool_permitted("notes__delete_note", rules, both)
    assert not tool_permitted("notes__add_note", rules, {"groups": ["ops"]})
    assert not tool_permitted("time__now", rules, {"groups": ["sales"]})
    assert tool_permitted("anything", [], {})  # no rules: nothing narrowed


def test_access_rules_are_validated() -> None:
    with pytest.raises(ValueError, match="claims"):
        AccessRule.model_validate({"claims": {}})
    with pytest.raises(ValueError, match="claims"):
        AccessRule.model_validate({"claims": {"groups": []}})
