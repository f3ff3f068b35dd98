"""Canonical form and hash of a spec: equal specs (after normalisation) hash equal."""

from __future__ import annotations

import hashlib
import json

from dtma.spec.models import ToolboxSpec


def canonical_json(spec: ToolboxSpec) -> str:
    """Sorted keys, no whitespace, defaults filled in: the form stored and hashed."""
    body = spec.model_dump(mode="json", by_alias=True)
    if body.get("gateway") is None:
        body.pop("gateway", None)  # absent, as in specs written before the field existed
    else:
        if body["gateway"].get("access") == []:
            body["gateway"].pop("access")  # the default: hashes as before the field existed
        if body["gateway"].get("pin") == "block":
            body["gateway"].pop("pin")  # the default: hashes as before the field existed
    if body["rollout"].get("tool_contract") == "warn":
        body["rollout"].pop("tool_contract")  # the default: hashes as before the field existed
    return json.dumps(
        body,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def spec_hash(spec: ToolboxSpec) -> str:
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def server_hash(spec: ToolboxSpec, server: str) -> str:
    """Hash of one server's spec plus the group settings that shape its container."""
    body = {
        "server": spec.server(server).model_dump(mode="json", by_alias=True),
        "network": spec.network.model_dump(mode="json"),
    }
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
