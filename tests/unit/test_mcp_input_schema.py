"""The MCP endpoint hands the SDK a tool's input schema for its `Mcp-Param-*` header check from
the last listing (instead of the SDK running tools/list for every call): nothing before a
listing, the listed schema after one, refreshed by the first call of a tool not yet listed."""

from __future__ import annotations

import mcp_types as types

from dtma.gateway.endpoint import ToolboxEndpoint
from tests.fakes_gateway import ONE_TOOL_SCHEMA, OneToolGateway


class Ctx:
    session = None


async def test_schema_lookup_reads_the_last_listing() -> None:
    gateway = OneToolGateway()
    endpoint = ToolboxEndpoint("tb", gateway)
    lookup = endpoint.server.get_tool_input_schema
    assert lookup is not None
    assert lookup("time__now") is None  # no listing yet: the header check is skipped
    await endpoint._list_tools(Ctx(), None)
    assert lookup("time__now") == ONE_TOOL_SCHEMA
    assert lookup("time__other") is None
    assert gateway.listings == 1


async def test_a_call_before_any_listing_fills_the_lookup_once() -> None:
    gateway = OneToolGateway()
    endpoint = ToolboxEndpoint("tb", gateway)
    params = types.CallToolRequestParams(name="time__now", arguments={"timezone": "UTC"})
    result = await endpoint._call_tool(Ctx(), params)
    assert result["content"][0]["text"] == "{'timezone': 'UTC'}"  # the upstream's JSON as is
    assert endpoint.server.get_tool_input_schema is not None
    assert endpoint.server.get_tool_input_schema("time__now") == ONE_TOOL_SCHEMA
    await endpoint._call_tool(Ctx(), params)
    assert gateway.listings == 1  # known now: no listing per call
