"""Tool contracts: the canonical hash and the table of compatible and breaking schema changes."""

from __future__ import annotations

from typing import Any

import pytest

from dtma.domain import tool_contract as tc


def obj(props: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props, **extra}
    if required is not None:
        schema["required"] = required
    return schema


S = {"type": "string"}
I = {"type": "integer"}  # noqa: E741
N = {"type": "number"}
BASE = obj({"text": S, "count": I}, ["text"])

# (case, old schema, new schema, expected changes: (change, where) pairs; [] = compatible)
TABLE: list[tuple[str, Any, Any, list[tuple[str, str]]]] = [
    ("identical", BASE, BASE, []),
    ("key order only", BASE, dict(reversed(list(BASE.items()))), []),
    ("optional property added", BASE, obj({"text": S, "count": I, "x": S}, ["text"]), []),
    ("required dropped", BASE, obj({"text": S, "count": I}, []), []),
    (
        "description changed",
        BASE,
        obj({"text": {**S, "description": "t"}, "count": I}, ["text"]),
        [],
    ),
    (
        "required property added",
        BASE,
        obj({"text": S, "count": I, "lang": S}, ["text", "lang"]),
        [(tc.REQUIRED_ADDED, "properties.lang")],
    ),
    (
        "existing property made required",
        BASE,
        obj({"text": S, "count": I}, ["text", "count"]),
        [(tc.REQUIRED_ADDED, "properties.count")],
    ),
    (
        "property removed",
        BASE,
        obj({"text": S}, ["text"]),
        [(tc.PROPERTY_REMOVED, "properties.count")],
    ),
    (
        "type changed",
        BASE,
        obj({"text": I, "count": I}, ["text"]),
        [(tc.TYPE_CHANGED, "properties.text")],
    ),
    ("integer widened to number", BASE, obj({"text": S, "count": N}, ["text"]), []),
    (
        "number narrowed to integer",
        obj({"n": N}),
        obj({"n": I}),
        [(tc.TYPE_CHANGED, "properties.n")],
    ),
    ("type widened to a list", obj({"t": S}), obj({"t": {"type": ["string", "null"]}}), []),
    (
        "untyped became typed",
        obj({"t": {}}),
        obj({"t": S}),
        [(tc.TYPE_CHANGED, "properties.t")],
    ),
    (
        "enum narrowed",
        obj({"m": {"type": "string", "enum": ["a", "b", "c"]}}),
        obj({"m": {"type": "string", "enum": ["a", "b"]}}),
        [(tc.ENUM_NARROWED, "properties.m")],
    ),
    (
        "enum widened",
        obj({"m": {"type": "string", "enum": ["a"]}}),
        obj({"m": {"type": "string", "enum": ["a", "b"]}}),
        [],
    ),
    (
        "enum added",
        obj({"m": S}),
        obj({"m": {"type": "string", "enum": ["a"]}}),
        [(tc.ENUM_NARROWED, "properties.m")],
    ),
    (
        "maximum lowered",
        obj({"n": {"type": "integer", "maximum": 10}}),
        obj({"n": {"type": "integer", "maximum": 5}}),
        [(tc.CONSTRAINT_TIGHTENED, "properties.n")],
    ),
    (
        "maximum raised",
        obj({"n": {"type": "integer", "maximum": 5}}),
        obj({"n": {"type": "integer", "maximum": 10}}),
        [],
    ),
    (
        "minLength added",
        obj({"t": S}),
        obj({"t": {"type": "string", "minLength": 3}}),
        [(tc.CONSTRAINT_TIGHTENED, "properties.t")],
    ),
    ("minLength dropped", obj({"t": {"type": "string", "minLength": 3}}), obj({"t": S}), []),
    (
        "pattern added",
        obj({"t": S}),
        obj({"t": {"type": "string", "pattern": "^a"}}),
        [(tc.CONSTRAINT_TIGHTENED, "properties.t")],
    ),
    (
        "additionalProperties closed",
        BASE,
        {**BASE, "additionalProperties": False},
        [(tc.ADDITIONAL_CLOSED, "")],
    ),
    ("additionalProperties opened", {**BASE, "additionalProperties": False}, BASE, []),
    (
        "nested property removed",
        obj({"opts": obj({"a": S, "b": S})}),
        obj({"opts": obj({"a": S})}),
        [(tc.PROPERTY_REMOVED, "properties.opts.properties.b")],
    ),
    (
        "array item type changed",
        obj({"xs": {"type": "array", "items": S}}),
        obj({"xs": {"type": "array", "items": I}}),
        [(tc.TYPE_CHANGED, "properties.xs.items")],
    ),
    (
        "anyOf option added",
        obj({"v": {"anyOf": [S]}}),
        obj({"v": {"anyOf": [S, I]}}),
        [],
    ),
    (
        "anyOf option removed",
        obj({"v": {"anyOf": [S, I]}}),
        obj({"v": {"anyOf": [S]}}),
        [(tc.SCHEMA_CHANGED, "properties.v")],
    ),
    (
        "$defs entry narrowed",
        {**obj({"o": {"$ref": "#/$defs/O"}}), "$defs": {"O": obj({"a": S, "b": S})}},
        {**obj({"o": {"$ref": "#/$defs/O"}}), "$defs": {"O": obj({"a": S})}},
        [(tc.PROPERTY_REMOVED, "$defs.O.properties.b")],
    ),
    (
        "$ref changed",
        obj({"o": {"$ref": "#/$defs/O"}}),
        obj({"o": {"$ref": "#/$defs/P"}}),
        [(tc.SCHEMA_CHANGED, "properties.o")],
    ),
    ("now accepts anything", BASE, True, []),
    ("now accepts nothing", BASE, False, [(tc.SCHEMA_CHANGED, "")]),
]


@pytest.mark.parametrize(
    ("old", "new", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_schema_pairs(old: Any, new: Any, expected: list[tuple[str, str]]) -> None:
    found = tc.breaking_changes({"t": old}, {"t": new})
    assert [(b.change, b.where) for b in found] == expected
    assert all(b.tool == "t" for b in found)


def test_removed_tool_is_breaking_and_added_tool_is_not() -> None:
    old = {"a": BASE, "b": BASE}
    assert tc.breaking_changes(old, {"a": BASE, "b": BASE, "c": BASE}) == []
    assert tc.breaking_changes(old, {"b": BASE}) == [tc.Break("a", tc.TOOL_REMOVED)]


def test_hash_is_canonical_and_covers_names_and_input_schemas_only() -> None:
    defs = [
        {"name": "a", "description": "one", "inputSchema": BASE},
        {"name": "b", "inputSchema": obj({"x": S})},
    ]
    same = [
        {"name": "b", "inputSchema": obj({"x": S}), "annotations": {"readOnlyHint": True}},
        {"name": "a", "description": "changed", "inputSchema": dict(reversed(list(BASE.items())))},
    ]
    h = tc.contract_hash(tc.contract_of(defs))
    assert h == tc.contract_hash(tc.contract_of(same))
    assert len(h) == 64
    renamed = [{**defs[0], "name": "c"}, defs[1]]
    assert tc.contract_hash(tc.contract_of(renamed)) != h
    changed = [{**defs[0], "inputSchema": obj({"text": I})}, defs[1]]
    assert tc.contract_hash(tc.contract_of(changed)) != h


def test_contract_of_tolerates_odd_tool_lists() -> None:
    assert tc.contract_of([{"name": "a"}, {"description": "no name"}, {"name": ""}]) == {"a": {}}


def test_descriptions_carry_no_values_from_schemas() -> None:
    old = obj({"mode": {"type": "string", "enum": ["secret-ish-value", "other"]}})
    new = obj({"mode": {"type": "string", "enum": ["other"]}})
    (found,) = tc.breaking_changes({"t": old}, {"t": new})
    text = found.describe()
    assert "secret-ish-value" not in text
    assert text == "tool t: enum narrowed at properties.mode (1 value(s) no longer allowed)"


def test_very_deep_schemas_are_judged_without_recursing_forever() -> None:
    old: Any = S
    new: Any = I
    for _ in range(tc.MAX_DEPTH + 5):
        old, new = obj({"n": old}), obj({"n": new})
    (found,) = tc.breaking_changes({"t": old}, {"t": new})
    assert found.change == tc.SCHEMA_CHANGED


def test_a_contract_keeps_structure_and_no_literal_a_server_wrote() -> None:
    leaky = "value-the-server-should-not-have-put-here"
    schema = obj(
        {
            "mode": {"type": "string", "enum": [leaky, "b"], "default": leaky},
            "code": {"type": "string", "pattern": leaky, "const": leaky, "examples": [leaky]},
            "n": {"type": "integer", "minimum": 1, "description": leaky},
        },
        ["mode"],
        title=leaky,
    )
    contract = tc.contract_of([{"name": "t", "description": leaky, "inputSchema": schema}])
    stored = tc.canonical_json(contract)
    assert leaky not in stored
    assert "minimum" in stored
    assert "enum" in stored
    assert contract["t"]["required"] == ["mode"]
    # Normalizing is idempotent, so a stored contract compares with a fresh one as equal...
    assert tc.normalize(contract["t"]) == contract["t"]
    assert tc.breaking_changes(contract, {"t": schema}) == []
    # ...and still sees a narrowed enum or a changed pattern through the hashes.
    narrowed = obj({**schema["properties"], "mode": {"type": "string", "enum": ["b"]}}, ["mode"])
    changed = tc.breaking_changes(contract, {"t": narrowed})
    assert [(b.change, b.where) for b in changed] == [(tc.ENUM_NARROWED, "properties.mode")]
