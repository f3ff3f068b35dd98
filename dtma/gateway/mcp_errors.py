"""The one mapping from the gateway's errors to the MCP (JSON-RPC) errors its clients see, and
to the outcome the call journal records.

Every handler of the endpoint (tools, prompts, resources) raises through `mcp_errors()`, so a
client sees the same code for the same failure whichever method it called:

| raised                                | code                   | data              | journal     |
|---------------------------------------|------------------------|-------------------|-------------|
| ToolDenied (`gateway.access`, filter) | -32602 invalid params  |                   | denied      |
| ToolNotFound, UnknownEntry            | -32602 invalid params  |                   | not_found   |
| ToolDefinitionChanged (`pin: block`)  | -32004 (no retry)      | retryable, reason | denied      |
| ServerUnavailable (not serving now)   | -32003 (retry)         | retryable, after  | unavailable |
| NotFound (the toolbox is gone)        | -32600 invalid request |                   | not_found   |
| UpstreamAnswerRefused (too large)     | -32603 internal error  |                   | error       |

An MCP error the server behind a tool returned passes through unchanged (journal: error), and
anything else is left to the SDK, which answers a generic internal error without its text.
The messages are the errors' own, which name no secret (engine and gateway errors never do).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NoReturn

import mcp_types as types
from mcp.shared.exceptions import MCPError

from dtma.errors import NotFound, ServerUnavailable, UpstreamAnswerRefused
from dtma.gateway.catalog import UnknownEntry
from dtma.gateway.pinning import ToolDefinitionChanged
from dtma.gateway.routing import ToolDenied, ToolNotFound

# JSON-RPC server-error range: the server behind this tool cannot answer now; retry.
SERVER_UNAVAILABLE = -32003
# The tool changed its definition since the gate and `gateway.pin` is block: not retryable.
TOOL_DEFINITION_CHANGED = -32004
RETRY_AFTER_MS = 500


def as_mcp_error(exc: Exception) -> MCPError | None:
    """The MCP error a client sees for `exc`, or None when it is not the gateway's to map."""
    if isinstance(exc, ToolNotFound | UnknownEntry):
        return MCPError(types.INVALID_PARAMS, exc.message)
    if isinstance(exc, ToolDefinitionChanged):
        return MCPError(
            TOOL_DEFINITION_CHANGED, exc.message, {"retryable": False, "reason": exc.code}
        )
    if isinstance(exc, ServerUnavailable):
        return MCPError(
            SERVER_UNAVAILABLE, exc.message, {"retryable": True, "retryAfterMs": RETRY_AFTER_MS}
        )
    if isinstance(exc, NotFound):
        return MCPError(types.INVALID_REQUEST, exc.message)
    if isinstance(exc, UpstreamAnswerRefused):
        return MCPError(types.INTERNAL_ERROR, exc.message)
    return None


def journal_outcome(exc: BaseException) -> str:
    """The call journal's outcome for a call that raised `exc`."""
    if isinstance(exc, ToolDenied | ToolDefinitionChanged):
        return "denied"
    if isinstance(exc, NotFound):
        return "not_found"
    if isinstance(exc, ServerUnavailable):
        return "unavailable"
    return "error"


def raise_mcp_error(exc: Exception) -> NoReturn:
    """Raise `exc` as its MCP error, without the gateway's traceback as its cause; or as it is,
    when it is not the gateway's to map. Call it from the `except` that caught `exc`."""
    mapped = as_mcp_error(exc)
    if mapped is None:
        raise exc
    raise mapped from None


@contextlib.contextmanager
def mcp_errors() -> Iterator[None]:
    """Raise what the block raises as its MCP error (`as_mcp_error`), without the gateway's
    traceback as its cause; errors it does not map go on unchanged."""
    try:
        yield
    except Exception as exc:
        raise_mcp_error(exc)
