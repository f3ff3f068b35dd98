"""Idempotency-Key for the POST routes: a repeated request with the same key gets the first
successful response (the same operation) instead of starting a second operation. Refusals
(4xx) are not kept.

Keys are kept in the state DB for KEEP_S, so a retry after an agent restart is still
recognised. The same key with a different method, path or body is refused (422). Requests with
one key are serialised in this process, so two racing retries start one operation.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from weakref import WeakValueDictionary

from aiohttp import web

from dtma.api.params import IDEMPOTENCY_KEY_PATTERN, MAX_KEY, matches
from dtma.errors import OperationQueued, SpecInvalid
from dtma.ports import StateStore

HEADER = "Idempotency-Key"
KEEP_S = 24 * 3600.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class IdempotencyKeys:
    def __init__(self, repo: StateStore) -> None:
        self._repo = repo
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    def wrap(self, handler: Handler) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            key = request.headers.get(HEADER)
            if key is None:
                return await handler(request)
            if len(key) > MAX_KEY or not matches(IDEMPOTENCY_KEY_PATTERN, key):
                raise SpecInvalid(
                    "invalid Idempotency-Key",
                    [{"loc": ["header", HEADER], "msg": f"1-{MAX_KEY} visible ASCII characters"}],
                )
            body = await request.read()
            fingerprint = hashlib.sha256(
                f"{request.method} {request.path}\n".encode() + body
            ).hexdigest()
            lock = self._locks.setdefault(key, asyncio.Lock())
            async with lock:
                seen = await self._repo.idempotent_response(key)
                if seen is not None:
                    if seen[0] != fingerprint:
                        raise SpecInvalid(
                            "Idempotency-Key reused",
                            [
                                {
                                    "loc": ["header", HEADER],
                                    "msg": "this key was used for a different request",
                                }
                            ],
                        )
                    return web.json_response(
                        json.loads(seen[2]), status=seen[1], headers={"Idempotent-Replayed": "true"}
                    )
                try:
                    response = await handler(request)
                except OperationQueued as queued:
                    # Recorded and queued though the answer is a 503: a retry with the same
                    # key gets the same operation, never a second one.
                    answer = {
                        "error": {
                            "code": queued.code,
                            "message": queued.message,
                            "details": queued.details,
                        }
                    }
                    await self._repo.store_idempotent_response(
                        key, fingerprint, 503, json.dumps(answer), KEEP_S
                    )
                    raise
                # Only successes are kept: a refused request started nothing, so a retry
                # with the same key (say, once the toolbox exists) is judged afresh.
                if isinstance(response, web.Response) and response.status < 400 and response.text:
                    await self._repo.store_idempotent_response(
                        key, fingerprint, response.status, response.text, KEEP_S
                    )
                return response

        return wrapped
