"""The SDK client's private parts that dtma uses: the protocol-era negotiation of
`ClientSession` in mode='auto' (the stateless 2026-07-28 `server/discover` first, the
`initialize` handshake when the server does not speak it). The SDK exposes it only through the
private module `mcp.client._probe`; the probes and the held upstream sessions negotiate with it
so that they pick the era exactly as the SDK's own client does.

Imports the SDK's client side only (tests/unit/test_sdk_compat.py and
tests/integration/test_idle_imports.py check that nothing here brings in its server side).
"""

from __future__ import annotations

from mcp.client._probe import negotiate_auto

__all__ = ["negotiate_auto"]
