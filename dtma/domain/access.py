"""Pure: toolbox-scoped client tokens and tool-call journal records.

A client token opens one toolbox's MCP endpoint and nothing else. Its value is shown once, when
it is issued; the agent keeps only its SHA-256 (the value is 32 random bytes, so a plain hash
is enough: there is nothing to guess). The prefix makes a leaked value easy to recognise (secret
scanners, logs) and lets the API tell a scoped token from the agent's own at a glance.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "dtma_tb_"  # noqa: S105 (a prefix, not a secret)
TOKEN_ID_PATTERN = r"^tok-[0-9a-f]{16}$"  # noqa: S105 (a pattern)
AGENT_PRINCIPAL = "agent"  # the token column of a call made with the agent's API token
OUTCOMES = ("ok", "error", "unavailable", "denied", "not_found", "cancelled")


@dataclass(frozen=True)
class ClientToken:
    """A token's metadata: never its value."""

    id: str
    toolbox: str
    name: str
    created_at: float
    last_used: float | None


@dataclass(frozen=True)
class ToolCall:
    """One tools/call through a toolbox's endpoint: never its arguments or its result."""

    ts: float
    toolbox: str
    server: str
    tool: str
    token: str  # a token id, or AGENT_PRINCIPAL
    duration: float  # seconds
    outcome: str  # one of OUTCOMES
    request_bytes: int
    response_bytes: int
    subject: str = ""  # a JWT caller's `sub` and `iss` (token "oauth"); never the token
    issuer: str = ""


def new_token() -> tuple[str, str]:
    """(id, value) of a fresh token."""
    return "tok-" + secrets.token_hex(8), TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


def is_scoped(value: str) -> bool:
    return value.startswith(TOKEN_PREFIX)
