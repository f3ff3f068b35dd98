"""The mcp-kit test server (images/mcp-kit): its tool sets, and tools-only mode, in process."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest

from dtma.domain import tool_contract as tc
from tests.conftest import REPO


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mcp_kit", REPO / "images/mcp-kit/mcp_kit.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["mcp_kit"] = module
    spec.loader.exec_module(module)
    return module


kit = _load()


async def contract(tool_set: str) -> dict[str, Any]:
    tools = await kit.build_server(tool_set).list_tools()
    return tc.contract_of(t.model_dump(by_alias=True, exclude_none=True) for t in tools)


@pytest.mark.parametrize(
    ("tool_set", "changes"),
    [
        ("v1", []),
        ("added", []),
        ("removed", [("add", tc.TOOL_REMOVED)]),
        ("required", [("echo", tc.REQUIRED_ADDED)]),
    ],
)
async def test_each_tool_set_changes_the_v1_contract_as_its_name_says(
    tool_set: str, changes: list[tuple[str, str]]
) -> None:
    found = tc.breaking_changes(await contract("v1"), await contract(tool_set))
    assert [(b.tool, b.change) for b in found] == changes


async def test_prompts_and_resources_are_served_unless_tools_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    full = kit.build_server("v1")
    assert [p.name for p in await full.list_prompts()] == ["greeting"]
    caps = full._lowlevel_server.get_capabilities()
    assert caps.prompts is not None
    assert caps.resources is not None
    monkeypatch.setenv("OFFER", "tools")
    bare = kit.build_server("v1")._lowlevel_server.get_capabilities()
    assert bare.tools is not None
    assert bare.prompts is None
    assert bare.resources is None


def test_an_unknown_tool_set_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOOL_SET", "v9")
    with pytest.raises(SystemExit) as exit_:
        kit.main()
    assert exit_.value.code == 2
    assert "TOOL_SET='v9'" in capsys.readouterr().err
