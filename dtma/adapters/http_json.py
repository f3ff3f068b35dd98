"""JsonFetcher over aiohttp: an OAuth issuer's metadata and JWKS, fetched on the loop.

Bounded: a per-request timeout and a size cap, since an issuer URL is configured but what
answers there is still input. Errors name the URL and the status, never the body. One client
session for the agent's life; `close()` at shutdown. Loop-only.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import aiohttp

from dtma.errors import IssuerUnavailable

TIMEOUT_S = 5.0
MAX_BYTES = 1024 * 1024


class HttpJson:
    def __init__(
        self,
        timeout: float = TIMEOUT_S,
        max_bytes: int = MAX_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max = max_bytes
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None

    async def get_json(self, url: str) -> dict[str, Any]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(
                url, ssl=self._ssl, allow_redirects=False, headers={"Accept": "application/json"}
            ) as resp:
                if resp.status != 200:
                    raise IssuerUnavailable(f"GET {url} answered {resp.status}")
                body = await resp.content.read(self._max + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise IssuerUnavailable(f"GET {url} failed: {type(exc).__name__}") from None
        if len(body) > self._max:
            raise IssuerUnavailable(f"GET {url}: answer larger than {self._max} bytes")
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise IssuerUnavailable(f"GET {url}: not JSON") from None
        if not isinstance(value, dict):
            raise IssuerUnavailable(f"GET {url}: not a JSON object")
        return value

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
