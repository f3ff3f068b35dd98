"""gateway/mcp_errors.py: the one mapping of the gateway's errors to the MCP errors clients see
and to the call journal's outcomes (the codes and data the e2e tests and clients rely on)."""

from __future__ import annotations

import pytest
from mcp.shared.exceptions import MCPError

from dtma.errors import DtmaError, NotFound, ServerUnavailable, UpstreamAnswerRefused
from dtma.gateway.catalog import UnknownEntry
from dtma.gateway.mcp_errors import (
    SERVER_UNAVAILABLE,
    TOOL_DEFINITION_CHANGED,
    as_mcp_error,
    journal_outcome,
    mcp_errors,
)
from dtma.gateway.pinning import ToolDefinitionChanged
from dtma.gateway.routing import ToolDenied, ToolNotFound

INVALID_PARAMS, INVALID_REQUEST, INTERNAL_ERROR = -32602, -32600, -32603


@pytest.mark.parametrize(
    ("raised", "code", "data", "outcome"),
    [
        (ToolDenied("unknown tool 'a__b'"), INVALID_PARAMS, None, "denied"),
        (ToolNotFound("unknown tool 'a__b'"), INVALID_PARAMS, None, "not_found"),
        (UnknownEntry("unknown prompt 'a__p'"), INVALID_PARAMS, None, "not_found"),
        (
            ToolDefinitionChanged("tool 'a__b' changed"),
            TOOL_DEFINITION_CHANGED,
            {"retryable": False, "reason": "tool_definition_changed"},
            "denied",
        ),
        (
            ServerUnavailable("server 'a' is not running now; retry shortly"),
            SERVER_UNAVAILABLE,
            {"retryable": True, "retryAfterMs": 500},
            "unavailable",
        ),
        (NotFound("toolbox t not found"), INVALID_REQUEST, None, "not_found"),
        (
            UpstreamAnswerRefused("tools/call x: larger than 1000 bytes"),
            INTERNAL_ERROR,
            None,
            "error",
        ),
    ],
)
def test_each_gateway_error_has_one_mcp_error_and_one_journal_outcome(
    raised: DtmaError, code: int, data: object, outcome: str
) -> None:
    mapped = as_mcp_error(raised)
    assert mapped is not None
    assert (mapped.error.code, mapped.error.message, mapped.error.data) == (
        code,
        raised.message,
        data,
    )
    assert journal_outcome(raised) == outcome
    with pytest.raises(MCPError) as caught, mcp_errors():
        raise raised
    assert caught.value.error.code == code
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_the_servers_own_mcp_error_and_other_failures_pass_through() -> None:
    own = MCPError(-32000, "the server's own refusal")
    assert as_mcp_error(own) is None
    assert journal_outcome(own) == "error"
    with pytest.raises(MCPError) as caught, mcp_errors():
        raise own
    assert caught.value is own
    with pytest.raises(RuntimeError), mcp_errors():
        raise RuntimeError("a bug: the SDK answers a generic internal error")
