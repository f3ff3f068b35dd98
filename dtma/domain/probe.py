"""Probe results are data: a probe never raises because its target is unhealthy."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# Reasons are constants; they appear verbatim in events and status.
OK = "ok"
TIMEOUT = "timeout"
CONNECT_FAILED = "connect_failed"
INITIALIZE_FAILED = "initialize_failed"
TOOLS_LIST_FAILED = "tools_list_failed"
PING_FAILED = "ping_failed"
MISSING_TOOLS = "missing_tools"
# A server listed one tool name twice: its two `<server>__<tool>` names would collide on the
# MCP endpoint, and a call could not say which it means.
TOOL_NAME_COLLISION = "tool_name_collision"
MAX_NAME_IN_DETAIL = 128
SESSION_CLOSED = "session_closed"
UNAUTHENTICATED = "unauthenticated"  # HTTP 401/403: alive, but wants credentials we lack


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    reason: str
    latency_ms: float
    tools: tuple[str, ...] = ()
    detail: str = ""
    missing_tools: tuple[str, ...] = field(default=())

    @classmethod
    def ok(cls, latency_ms: float, tools: Iterable[str] = ()) -> ProbeResult:
        return cls(True, OK, latency_ms, tuple(tools))

    @classmethod
    def failed(cls, reason: str, latency_ms: float, detail: str = "") -> ProbeResult:
        return cls(False, reason, latency_ms, (), detail)


def check_expected_tools(
    tools: Iterable[str], expect: Iterable[str], latency_ms: float
) -> ProbeResult:
    """Healthy iff every expected tool is listed, and no name is listed twice. Pure."""
    listed = tuple(tools)
    twice = sorted({t for t in listed if listed.count(t) > 1})
    if twice:
        return ProbeResult(
            False,
            TOOL_NAME_COLLISION,
            latency_ms,
            listed,
            "tools listed more than once: " + ", ".join(t[:MAX_NAME_IN_DETAIL] for t in twice[:10]),
        )
    missing = tuple(t for t in expect if t not in listed)
    if missing:
        return ProbeResult(
            False,
            MISSING_TOOLS,
            latency_ms,
            listed,
            f"missing tools: {', '.join(missing)}",
            missing,
        )
    return ProbeResult.ok(latency_ms, listed)
