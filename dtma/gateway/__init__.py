"""The toolbox MCP endpoint, `/v1/toolboxes/{id}/mcp`: everything between a client's request and
the server that answers it (docs/architecture.md, "The gateway").

- `registry.py`, `endpoint.py` (the SDK's server per toolbox), `asgi.py` (bridged to aiohttp),
  `exchange.py` and `handshake.py` (the hot paths of the two protocol eras), `catalog_handlers.py`
  (prompts and resources); every read of the SDK's private parts is in `dtma/sdk_compat/`;
- `routing.py` and `catalog.py` (naming, and routing to the serving servers: the engine's port),
  `pinning.py` (tool definitions pinned at the gate);
- `tokens.py` (dtma's client tokens), `oauth.py` (JWT access tokens), `caller.py` (what a JWT
  caller may use);
- `call_journal.py` (the tool-call journal) and `mcp_errors.py` (the one mapping of the
  gateway's errors to MCP errors, and to the journal's outcomes).

The aiohttp routes stay in `dtma/api/` (`mcp_endpoint.py`, `oauth.py`). The servers' side (the
held sessions, the relay, the probes) is in `dtma/adapters/`, behind the `HealthProbe` and
`UpstreamClient` ports (dtma/ports.py).
"""
