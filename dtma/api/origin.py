"""The MCP endpoint's Origin check against DNS rebinding (the MCP transport spec: a server MUST
validate the `Origin` header of every request).

A browser sends `Origin` with every cross-origin request it makes; MCP clients that are not
browsers (the SDKs, desktop clients, the controller) send none, and are not affected. A page
reached through DNS rebinding has its own name in `Origin` (the attacker's domain, resolving to
this host), so a request whose `Origin` names anything but this host's loopback names or an
origin the operator allowed (`DTMA_MCP_ALLOWED_ORIGINS`) is refused with 403 before anything
else is done with it. The bearer token already guards the endpoint; this is the spec's second
line.
"""

from __future__ import annotations

from collections.abc import Iterable

from yarl import URL

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class OriginPolicy:
    """Which `Origin` values may reach the endpoint. `allowed`: origins as
    `scheme://host[:port]` (exact), or bare host names (any scheme and port)."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        entries = [a.strip().rstrip("/").lower() for a in allowed if a.strip()]
        self._origins = frozenset(e for e in entries if "://" in e)
        self._hosts = frozenset(e for e in entries if "://" not in e)

    def permits(self, origin: str | None) -> bool:
        if origin is None:
            return True  # not a browser
        value = origin.strip().rstrip("/").lower()
        if value in self._origins:
            return True
        try:
            url = URL(value)
        except ValueError:
            return False
        host = url.host
        if not url.absolute or host is None:
            return False  # "null" (a sandboxed or file page) and other opaque origins
        return host in LOOPBACK_HOSTS or host in self._hosts
