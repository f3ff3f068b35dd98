"""rollout.tool_contract: its values, its default, and that the default keeps old spec hashes."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from dtma.spec.hashing import canonical_json, spec_hash
from dtma.spec.models import ToolboxSpec

SERVER = {"name": "kit", "image": "dtma-examples/mcp-kit:latest"}


def spec(**rollout: Any) -> ToolboxSpec:
    return ToolboxSpec.model_validate({"servers": [SERVER], "rollout": rollout})


def test_default_is_warn_and_strict_is_accepted() -> None:
    assert spec().rollout.tool_contract == "warn"
    assert spec(tool_contract="strict").rollout.tool_contract == "strict"


def test_other_values_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        spec(tool_contract="off")
    assert err.value.errors()[0]["loc"] == ("rollout", "tool_contract")


def test_the_default_hashes_as_before_the_field_existed_and_strict_does_not() -> None:
    assert "tool_contract" not in canonical_json(spec())
    assert spec_hash(spec()) == spec_hash(spec(tool_contract="warn"))
    assert spec_hash(spec(tool_contract="strict")) != spec_hash(spec())
    stored = canonical_json(spec(tool_contract="strict"))
    assert ToolboxSpec.model_validate_json(stored).rollout.tool_contract == "strict"


def test_the_openapi_document_describes_the_field() -> None:
    from dtma.api.openapi import build_document

    rollout = build_document()["components"]["schemas"]["Rollout"]["properties"]
    assert rollout["tool_contract"]["enum"] == ["warn", "strict"]
    assert rollout["tool_contract"]["default"] == "warn"
