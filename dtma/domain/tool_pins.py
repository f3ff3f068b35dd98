"""Tool definitions pinned per revision (issue 20, item 4: the "rug pull").

Pure (no I/O). At a revision's gate each server's tools are pinned: per tool name, a digest of
its description and a digest of its whole input schema as the server wrote it (property
descriptions included: they reach the model too). Digests only, so a stored pin quotes nothing
a server wrote. Later listings of the same revision are compared with the pins
(`pin_changes`): a tool whose description or schema differs, or a name that was not pinned, is
a change. A tool that is gone is not (nothing is offered that could mislead).

This is separate from the tool contract (domain/tool_contract.py), which compares revisions for
breaking changes and ignores descriptions; pins compare one revision with itself and count any
difference.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from dtma.domain.tool_contract import canonical_json

Pins = dict[str, dict[str, str]]  # tool name -> {"description": digest, "schema": digest}
Policy = Literal["off", "warn", "block"]

NEW_TOOL = "new_tool"
DESCRIPTION_CHANGED = "description_changed"
SCHEMA_CHANGED = "schema_changed"
DESCRIPTION_AND_SCHEMA_CHANGED = "description_and_schema_changed"

# Event reasons: what the endpoint did about a change.
PINNED = "pinned"  # block: not offered, calls refused
WARNED = "warned"  # warn: offered, reported
POLICY_OF_REASON = {PINNED: "block", WARNED: "warn"}


def _digest(value: Any) -> str:
    try:
        text = canonical_json(value)
    except (RecursionError, TypeError, ValueError):
        text = repr(value)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def pin_of(tool: Mapping[str, Any]) -> dict[str, str]:
    """One tool's pin. An absent description and an absent schema have digests of their own."""
    return {
        "description": _digest(tool.get("description")),
        "schema": _digest(tool.get("inputSchema")),
    }


def pins_of(tool_defs: Iterable[Mapping[str, Any]]) -> Pins:
    """The pins of a tools/list answer (wire JSON); entries without a string name are skipped."""
    pins: Pins = {}
    for tool in tool_defs:
        name = tool.get("name")
        if isinstance(name, str) and name:
            pins[name] = pin_of(tool)
    return pins


def pin_changes(
    pinned: Mapping[str, Mapping[str, str]], tool_defs: Iterable[Mapping[str, Any]]
) -> dict[str, str]:
    """tool name -> what changed, for every listed tool that differs from its pin or has none.
    Unchanged and removed tools are absent."""
    changes: dict[str, str] = {}
    for name, now in pins_of(tool_defs).items():
        before = pinned.get(name)
        if before is None:
            changes[name] = NEW_TOOL
            continue
        description = before.get("description") != now["description"]
        schema = before.get("schema") != now["schema"]
        if description and schema:
            changes[name] = DESCRIPTION_AND_SCHEMA_CHANGED
        elif description:
            changes[name] = DESCRIPTION_CHANGED
        elif schema:
            changes[name] = SCHEMA_CHANGED
    return changes


def change_key(tool: Mapping[str, Any]) -> str:
    """Tells one changed definition from another, so each change is reported once."""
    pin = pin_of(tool)
    return f"{pin['description']}/{pin['schema']}"
