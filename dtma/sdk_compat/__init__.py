"""Every use dtma makes of the MCP SDK's internals (`mcp`, `mcp_types`): its private modules,
its objects' private attributes, and its package layout. Nowhere else in dtma reaches past the
SDK's public names; tests/unit/test_sdk_compat.py scans dtma/ for that and checks, on the
installed SDK, every private name read here.

Why these exist at all, each in one module:
- `packages.py`: the layout of the SDK's packages (which `__init__` imports the server side),
  so that probes and upstream calls load the client side alone (dtma/lazy_import.py);
- `client.py`: the SDK client's own protocol-era negotiation (`mcp.client._probe`), which
  `ClientSession` offers only through its private module;
- `server.py`: the endpoint's reads of the server side's private state (a handler's
  `Connection`, the session manager's open sessions, a transport's idle countdown) and the
  SDK's OpenTelemetry middleware (`mcp.server._otel`), which the endpoint drops.

The SDK is pinned to one minor version in pyproject.toml (`mcp` and `mcp-types`, released
together): a new minor may move any of these, and its upgrade starts with that test.

This package's `__init__` and `packages.py` import nothing of the SDK (lazy_import runs
`packages` before the SDK is loaded), and `client.py` nothing of its server side; import each
module by its own name.
"""
