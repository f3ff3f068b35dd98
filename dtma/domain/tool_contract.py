"""Tool contracts: what a caller of a server's tools relies on, hashed and compared.

Pure (no I/O). A server's contract is its tool names and each tool's input schema, reduced to
what validation depends on (`normalize`): descriptions, titles, defaults and examples are
dropped, and literal values a schema names (enum members, `const`, `pattern`) are kept only as
hashes, so a stored contract quotes nothing a server wrote there. Annotations and output
schemas are not part of it. `contract_hash` is a canonical sha256 of it (key order does not
matter). `breaking_changes(old, new)` lists what a caller
that was valid against `old` may trip on with `new`: a removed tool, or an input schema that
accepts less than before. Additions (a new tool, a new optional property, a wider type or enum,
a looser bound) are compatible. When a change cannot be judged (deeper than MAX_DEPTH, or a
changed `$ref`/composition), it counts as breaking: the check errs towards telling.

Messages name tools, schema paths, keywords and JSON types, never enum values, defaults or
other literal values from the schemas.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Contract = dict[str, Any]  # tool name -> input schema (JSON)

MAX_DEPTH = 32
TOOL_CONTRACT = "tool_contract"  # the gate reason when rollout.tool_contract is strict

TOOL_REMOVED = "tool_removed"
REQUIRED_ADDED = "required_added"
PROPERTY_REMOVED = "property_removed"
TYPE_CHANGED = "type_changed"
ENUM_NARROWED = "enum_narrowed"
CONSTRAINT_TIGHTENED = "constraint_tightened"
ADDITIONAL_CLOSED = "additional_properties_closed"
SCHEMA_CHANGED = "schema_changed"

_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_EXACT = ("pattern", "format", "multipleOf", "const", "$ref", "uniqueItems", "$deep")
# What normalize() keeps: subschemas (recursed into), maps of them, lists of them, plain
# keywords, and literals (kept as hashes).
_SUB = ("additionalProperties", "items", "not", "if", "then", "else", "contains", "propertyNames")
_SUB_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SUB_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_PLAIN = (
    "type",
    "required",
    "format",
    "multipleOf",
    "uniqueItems",
    "$ref",
    "dependentRequired",
    *_LOWER_BOUNDS,
    *_UPPER_BOUNDS,
)
_ALL_TYPES = frozenset({"string", "number", "integer", "boolean", "object", "array", "null"})


@dataclass(frozen=True)
class Break:
    """One breaking change. `where` is a schema path inside the tool's input schema."""

    tool: str
    change: str
    where: str = ""
    detail: str = ""

    def describe(self) -> str:
        text = f"tool {self.tool}: {self.change.replace('_', ' ')}"
        if self.where:
            text += f" at {self.where}"
        return f"{text} ({self.detail})" if self.detail else text


def contract_of(tool_defs: Iterable[Mapping[str, Any]]) -> Contract:
    """The contract of a tools/list answer: name -> normalized inputSchema (absent: `{}`)."""
    contract: Contract = {}
    for tool in tool_defs:
        name = tool.get("name")
        if isinstance(name, str) and name:
            contract[name] = normalize(tool.get("inputSchema", {}))
    return contract


def _digest(value: Any) -> str:
    try:
        text = canonical_json(value)
    except (RecursionError, TypeError, ValueError):
        text = repr(type(value))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def normalize(schema: Any, depth: int = 0) -> Any:
    """The validation-relevant part of a JSON schema (see the module docstring). Idempotent."""
    if isinstance(schema, bool):
        return schema
    if not isinstance(schema, Mapping):
        return {}
    if depth >= MAX_DEPTH:
        return {"$deep": _digest(schema)}
    out: dict[str, Any] = {k: schema[k] for k in _PLAIN if k in schema}
    for key in _SUB:
        if key in schema:
            sub = schema[key]
            items = key == "items" and isinstance(sub, list)
            out[key] = (
                [normalize(s, depth + 1) for s in sub] if items else normalize(sub, depth + 1)
            )
    for key in _SUB_MAPS:
        if isinstance(schema.get(key), Mapping):
            out[key] = {str(n): normalize(s, depth + 1) for n, s in schema[key].items()}
    for key in _SUB_LISTS:
        if isinstance(schema.get(key), list):
            out[key] = [normalize(s, depth + 1) for s in schema[key]]
    if isinstance(schema.get("enum"), list):
        out["enum"] = sorted({_keep(v) for v in schema["enum"]})
    for key in ("const", "pattern"):
        if key in schema:
            out[key] = _keep(schema[key])
    if "$deep" in schema:
        out["$deep"] = schema["$deep"]
    return out


def _keep(value: Any) -> str:
    """A literal as its hash (already-hashed ones unchanged, so normalize is idempotent)."""
    if isinstance(value, str) and value.startswith("sha256:") and len(value) == 39:
        return value
    return _digest(value)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def contract_hash(contract: Contract) -> str:
    return hashlib.sha256(canonical_json(contract).encode()).hexdigest()


def breaking_changes(old: Contract, new: Contract) -> list[Break]:
    """Every change from `old` to `new` that can break a caller of `old`, in tool order. Both
    are normalized here, so raw schemas and stored contracts compare alike."""
    found: list[Break] = []
    for tool in sorted(old):
        if tool not in new:
            found.append(Break(tool, TOOL_REMOVED))
            continue
        found.extend(
            Break(tool, change, where, detail)
            for change, where, detail in _compare(normalize(old[tool]), normalize(new[tool]), "", 0)
        )
    return found


_Finding = tuple[str, str, str]  # (change, where, detail)


def _types(schema: Mapping[str, Any]) -> frozenset[str]:
    declared = schema.get("type")
    if declared is None:
        return _ALL_TYPES
    names = [declared] if isinstance(declared, str) else list(declared)
    found = {n for n in names if isinstance(n, str)}
    if "number" in found:
        found.add("integer")  # every integer is a number
    return frozenset(found)


def _path(base: str, *parts: str) -> str:
    return ".".join(p for p in (base, *parts) if p)


def _compare(old: Any, new: Any, where: str, depth: int) -> list[_Finding]:
    """Findings for one schema pair (dict or boolean schemas)."""
    if canonical_json(old) == canonical_json(new):
        return []
    if depth >= MAX_DEPTH:
        return [(SCHEMA_CHANGED, where, "too deep to compare")]
    if new is True or new == {}:
        return []  # accepts anything: nothing a caller sends is refused
    if new is False:
        return [(SCHEMA_CHANGED, where, "now accepts nothing")]
    if old is False:
        return []  # accepted nothing before: no caller can break
    old_s: Mapping[str, Any] = old if isinstance(old, dict) else {}
    new_s: Mapping[str, Any] = new
    found: list[_Finding] = []
    found += _compare_types(old_s, new_s, where)
    found += _compare_enum(old_s, new_s, where)
    found += _compare_bounds(old_s, new_s, where)
    found += _compare_composition(old_s, new_s, where)
    found += _compare_object(old_s, new_s, where, depth)
    found += _compare_items(old_s, new_s, where, depth)
    found += _compare_defs(old_s, new_s, where, depth)
    return found


def _compare_types(old: Mapping[str, Any], new: Mapping[str, Any], where: str) -> list[_Finding]:
    before, after = _types(old), _types(new)
    if before <= after:
        return []
    lost = sorted(before - after)
    if before == _ALL_TYPES:
        return [(TYPE_CHANGED, where, f"now only {'/'.join(sorted(_types(new)))}")]
    return [(TYPE_CHANGED, where, f"no longer accepts {'/'.join(lost)}")]


def _compare_enum(old: Mapping[str, Any], new: Mapping[str, Any], where: str) -> list[_Finding]:
    if "enum" not in new or not isinstance(new["enum"], list):
        return []
    if "enum" not in old or not isinstance(old["enum"], list):
        return [(ENUM_NARROWED, where, "an enum was added")]
    kept = {canonical_json(v) for v in new["enum"]}
    lost = sum(1 for v in old["enum"] if canonical_json(v) not in kept)
    return [(ENUM_NARROWED, where, f"{lost} value(s) no longer allowed")] if lost else []


def _compare_bounds(old: Mapping[str, Any], new: Mapping[str, Any], where: str) -> list[_Finding]:
    found: list[_Finding] = []
    for key in _LOWER_BOUNDS:
        if _is_number(new.get(key)) and (not _is_number(old.get(key)) or new[key] > old[key]):
            found.append((CONSTRAINT_TIGHTENED, where, f"{key} raised"))
    for key in _UPPER_BOUNDS:
        if _is_number(new.get(key)) and (not _is_number(old.get(key)) or new[key] < old[key]):
            found.append((CONSTRAINT_TIGHTENED, where, f"{key} lowered"))
    for key in _EXACT:
        if key in new and (key not in old or canonical_json(old[key]) != canonical_json(new[key])):
            if key == "uniqueItems" and new[key] is False:
                continue
            change = SCHEMA_CHANGED if key == "$ref" else CONSTRAINT_TIGHTENED
            found.append((change, where, f"{key} added or changed"))
    return found


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare_composition(
    old: Mapping[str, Any], new: Mapping[str, Any], where: str
) -> list[_Finding]:
    """anyOf/oneOf may gain options (each old option must still be there, unchanged); allOf and
    `not` may not gain anything. Anything else changed is judged breaking."""
    found: list[_Finding] = []
    for key in ("anyOf", "oneOf"):
        if key not in new:
            continue
        if key not in old:
            found.append((SCHEMA_CHANGED, where, f"{key} added"))
            continue
        options = {canonical_json(o) for o in new[key]}
        if any(canonical_json(o) not in options for o in old[key]):
            found.append((SCHEMA_CHANGED, where, f"{key} option removed or changed"))
    for key in ("allOf", "not", "if", "then", "else", "dependentRequired", "dependentSchemas"):
        if key in new and canonical_json(new[key]) != canonical_json(old.get(key)):
            found.append((SCHEMA_CHANGED, where, f"{key} added or changed"))
    return found


def _compare_object(
    old: Mapping[str, Any], new: Mapping[str, Any], where: str, depth: int
) -> list[_Finding]:
    found: list[_Finding] = []
    old_props: Mapping[str, Any] = old.get("properties") or {}
    new_props: Mapping[str, Any] = new.get("properties") or {}
    for name in sorted(old_props):
        at = _path(where, "properties", name)
        if name not in new_props:
            found.append((PROPERTY_REMOVED, at, ""))
        else:
            found += _compare(old_props[name], new_props[name], at, depth + 1)
    old_required = set(old.get("required") or [])
    for name in sorted(set(new.get("required") or []) - old_required):
        found.append((REQUIRED_ADDED, _path(where, "properties", str(name)), ""))
    if old.get("additionalProperties", True) is not False:
        extra = new.get("additionalProperties", True)
        if extra is False:
            found.append((ADDITIONAL_CLOSED, where, ""))
        elif isinstance(extra, dict) and extra:
            found += _compare(
                old.get("additionalProperties", True),
                extra,
                _path(where, "additionalProperties"),
                depth + 1,
            )
    return found


def _compare_items(
    old: Mapping[str, Any], new: Mapping[str, Any], where: str, depth: int
) -> list[_Finding]:
    if "items" not in new:
        return []
    return _compare(old.get("items", True), new["items"], _path(where, "items"), depth + 1)


def _compare_defs(
    old: Mapping[str, Any], new: Mapping[str, Any], where: str, depth: int
) -> list[_Finding]:
    """Shared definitions (pydantic's `$defs`) are compared by name; a definition that is gone
    shows up as the `$ref` to it changing."""
    found: list[_Finding] = []
    for key in ("$defs", "definitions"):
        old_defs: Mapping[str, Any] = old.get(key) or {}
        new_defs: Mapping[str, Any] = new.get(key) or {}
        for name in sorted(set(old_defs) & set(new_defs)):
            found += _compare(old_defs[name], new_defs[name], _path(where, key, name), depth + 1)
    return found
