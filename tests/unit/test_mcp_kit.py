"""The mcp-kit test server (images/mcp-kit): its tool sets, and tools-only mode, in process."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest
from mcp import Client
from mcp_types import Implementation

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
        ("slow", []),
        ("headers", []),
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


async def test_slow_waits_and_says_whether_its_wait_was_cancelled_or_done(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = kit.build_server("slow")
    assert "wait" in {t.name for t in await server.list_tools()}
    err = ""
    async with Client(server, mode="legacy") as client:  # the handshake era: stream loop
        done = await client.call_tool("wait", {"seconds": 0.01, "label": "quick"})
        assert [getattr(c, "text", None) for c in done.content] == ["waited 0.01s"]
        call = asyncio.create_task(client.call_tool("wait", {"seconds": 30, "label": "cut"}))
        await asyncio.sleep(0.3)
        call.cancel()  # the SDK's client then sends notifications/cancelled for it
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(100):
            err += capsys.readouterr().err
            if "wait cancelled" in err:
                break
            await asyncio.sleep(0.05)
    lines = [line for line in err.splitlines() if line.startswith("mcp-kit: wait")]
    assert len(lines) == 2, err
    assert lines[0].startswith("mcp-kit: wait done (request ")
    assert lines[0].endswith(", label quick)")
    assert lines[1].startswith("mcp-kit: wait cancelled (request ")
    assert lines[1].endswith(", label cut)")


async def test_headers_marks_locate_region_for_an_mcp_param_header_and_logs_calls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = kit.build_server("headers")
    tools = {t.name: t for t in await server.list_tools()}
    assert set(tools) == {"echo", "add", "locate"}
    region = tools["locate"].input_schema["properties"]["region"]
    assert region["x-mcp-header"] == "Region"
    assert "x-mcp-header" not in str(tools["echo"].input_schema)
    info = Implementation(name="kit-test", version="1")
    async with Client(server, client_info=info) as client:  # in memory: no HTTP headers
        done = await client.call_tool("locate", {"region": "Tyrol", "city": "Innsbruck"})
        assert [getattr(c, "text", None) for c in done.content] == ["Innsbruck in Tyrol"]
        echoed = await client.call_tool("echo", {"text": "hi", "times": 2})
        assert [getattr(c, "text", None) for c in echoed.content] == ["hi hi"]
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("mcp-kit: ")]
    assert lines == [
        "mcp-kit: locate Tyrol from kit-test (Mcp-Param-Region: -)",
        "mcp-kit: echo from kit-test",
    ]
