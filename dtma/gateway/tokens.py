"""Toolbox-scoped client tokens: issue, list, revoke, and verify on every MCP request.

The index of token hashes lives in memory (loaded once at start, changed with the DB), so
verifying a request costs a hash and a dict lookup, never a trip to SQLite; revocation removes
the entry before it returns, so the next request with that token is refused. A token's
`last_used` is kept in memory and written in batches (`flush_usage`), off the request path.
Token values exist only in the answer to `issue`; nothing here logs or stores one.
`on_forget` listeners hear the ids of tokens that stop working (revoked, or gone with their
toolbox), so that what a token opened and still holds open (an MCP GET stream) can be closed.
Loop-only; not thread-safe.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from dtma.domain.access import ClientToken, is_scoped, new_token, token_hash
from dtma.domain.records import EventRecord
from dtma.engine import event_kinds as ev
from dtma.errors import Conflict, NotFound
from dtma.ports import TokenStore

log = structlog.get_logger(__name__)

MAX_TOKENS_PER_TOOLBOX = 100


@dataclass(frozen=True)
class Grant:
    """Who a verified scoped token is: its id and the one toolbox it opens."""

    token_id: str
    toolbox: str
    digest: str


class AccessTokens:
    def __init__(self, store: TokenStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._by_hash: dict[str, Grant] = {}
        self._used: dict[str, float] = {}
        self._deletions: dict[str, int] = {}  # toolbox -> deletions seen (for issue()'s race)
        self._forget_listeners: list[Callable[[frozenset[str]], object]] = []

    def on_forget(self, listener: Callable[[frozenset[str]], object]) -> None:
        """Call `listener(token_ids)` whenever tokens stop working, before the revoking call
        returns. A listener must be quick; one that raises is logged and the others still run."""
        self._forget_listeners.append(listener)

    async def load(self) -> int:
        """Read every token's hash from the store. Call once, after the store is open."""
        self._by_hash = {h: Grant(i, tb, h) for h, i, tb in await self._store.token_hashes()}
        return len(self._by_hash)

    async def issue(self, toolbox: str, name: str = "") -> tuple[ClientToken, str]:
        """A new token for `toolbox`: (its metadata, its value). The value is not kept.
        NotFound for an unknown toolbox; Conflict past MAX_TOKENS_PER_TOOLBOX."""
        token_id, value = new_token()
        digest = token_hash(value)
        deletions = self._deletions.get(toolbox, 0)
        try:
            record = await self._store.add_token(
                token_id, toolbox, name, digest, MAX_TOKENS_PER_TOOLBOX
            )
        except OverflowError:
            raise Conflict(
                f"toolbox {toolbox} already has {MAX_TOKENS_PER_TOOLBOX} tokens; revoke one first"
            ) from None
        if record is None:
            raise NotFound(f"no toolbox {toolbox}")
        if self._deletions.get(toolbox, 0) != deletions:  # deleted while the row was written
            await self._store.delete_token(toolbox, token_id)
            raise NotFound(f"toolbox {toolbox} was deleted meanwhile")
        self._by_hash[digest] = Grant(token_id, toolbox, digest)
        log.info("client_token_issued", toolbox=toolbox, token_id=token_id)
        return record, value

    async def list(self, toolbox: str) -> list[ClientToken]:
        """The toolbox's tokens, with `last_used` as of now (including unflushed uses)."""
        # Read the unwritten uses before the store: a use leaves memory only once its write has
        # landed, so it is in one or the other whichever way a flush interleaves.
        unwritten = dict(self._used)
        tokens = await self._store.client_tokens(toolbox)
        return [
            ClientToken(t.id, t.toolbox, t.name, t.created_at, unwritten.get(t.id, t.last_used))
            for t in tokens
        ]

    async def revoke(self, toolbox: str, token_id: str) -> None:
        """Refuse the token from now on. NotFound if the toolbox has no such token."""
        self._forget(lambda g: g.token_id == token_id and g.toolbox == toolbox)
        if not await self._store.delete_token(toolbox, token_id):
            raise NotFound(f"toolbox {toolbox} has no token {token_id}")
        log.info("client_token_revoked", toolbox=toolbox, token_id=token_id)

    def verify(self, presented: str) -> Grant | None:
        """The grant of a scoped token value, or None. The lookup is by the SHA-256 of what was
        presented, so its timing says nothing about a stored value; the final check is a
        constant-time comparison all the same."""
        if not is_scoped(presented):
            return None
        digest = token_hash(presented)
        grant = self._by_hash.get(digest)
        if grant is None or not hmac.compare_digest(grant.digest, digest):
            return None
        self._used[grant.token_id] = self._clock()
        return grant

    async def flush_usage(self) -> None:
        """Write the batched `last_used` times. Safe to call at any time. A use stays in memory
        until its write has landed (then `list` finds it in the store); on failure all stay."""
        used = dict(self._used)
        if not used:
            return
        await self._store.touch_tokens(used)
        for token_id, ts in used.items():
            if self._used.get(token_id) == ts:  # not used again meanwhile, nor forgotten
                del self._used[token_id]

    async def observe(self, event: EventRecord) -> None:
        """A journal observer: a deleted toolbox's tokens stop working (the store drops their
        rows in the same transaction as the toolbox)."""
        if event.kind == ev.TOOLBOX_DELETED and event.toolbox:
            toolbox = event.toolbox
            self._deletions[toolbox] = self._deletions.get(toolbox, 0) + 1
            self._forget(lambda g: g.toolbox == toolbox)

    def _forget(self, which: Callable[[Grant], bool]) -> None:
        gone: set[str] = set()
        for digest in [h for h, g in self._by_hash.items() if which(g)]:
            grant = self._by_hash.pop(digest)
            self._used.pop(grant.token_id, None)
            gone.add(grant.token_id)
        if gone:
            for listener in self._forget_listeners:
                try:
                    listener(frozenset(gone))
                except Exception:  # the tokens are refused already; the rest must still run
                    log.exception("token_forget_listener_failed")
