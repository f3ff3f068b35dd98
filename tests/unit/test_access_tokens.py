"""AccessTokens' own logic on an in-memory store: scoped values only, and a toolbox deleted
while a token of it is being issued leaves no working token behind."""

from __future__ import annotations

import asyncio

import pytest

from dtma.domain.access import TOKEN_PREFIX, is_scoped, new_token, token_hash
from dtma.domain.records import EventRecord
from dtma.errors import NotFound
from dtma.gateway.tokens import AccessTokens
from tests.fakes_gateway import MemoryTokenStore


def deleted(toolbox: str) -> EventRecord:
    return EventRecord(1, 1.0, "toolbox_deleted", toolbox, None, None, None, "", "")


def test_token_values_are_prefixed_random_and_hashed() -> None:
    (id_a, a), (id_b, b) = new_token(), new_token()
    assert a.startswith(TOKEN_PREFIX)
    assert len(a) >= len(TOKEN_PREFIX) + 43  # 32 random bytes, base64url
    assert (a != b, id_a != id_b) == (True, True)
    assert is_scoped(a)
    assert not is_scoped("some-api-token")
    assert token_hash(a) != token_hash(b)
    assert len(token_hash(a)) == 64
    assert a not in token_hash(a)


async def test_a_deletion_during_issue_leaves_no_working_token() -> None:
    store = MemoryTokenStore({"tb"})
    access = AccessTokens(store)

    async def delete_meanwhile() -> None:
        store.rows.clear()  # the store drops a toolbox's tokens with it
        await access.observe(deleted("tb"))

    store.during_add = delete_meanwhile
    with pytest.raises(NotFound, match="deleted meanwhile"):
        await access.issue("tb")
    assert store.rows == {}
    assert await access.load() == 0

    store.during_add = None
    _, value = await access.issue("tb")  # the toolbox id in use again: fine
    assert access.verify(value) is not None
    await access.observe(deleted("tb"))
    assert access.verify(value) is None


async def test_listeners_hear_which_tokens_stopped_working() -> None:
    store = MemoryTokenStore({"tb", "other"})
    access = AccessTokens(store)
    heard: list[frozenset[str]] = []
    access.on_forget(heard.append)
    a, _ = await access.issue("tb")
    b, _ = await access.issue("tb")
    c, _ = await access.issue("other")

    await access.revoke("tb", a.id)
    assert heard == [frozenset({a.id})]
    with pytest.raises(NotFound):
        await access.revoke("tb", a.id)  # already gone: nothing more to hear
    assert heard == [frozenset({a.id})]

    await access.observe(deleted("tb"))
    assert heard[1:] == [frozenset({b.id})]  # only the deleted toolbox's
    await access.observe(deleted("tb"))
    assert len(heard) == 2
    assert c.id not in set().union(*heard)


async def test_a_failing_listener_leaves_revocation_whole() -> None:
    store = MemoryTokenStore({"tb"})
    access = AccessTokens(store)
    heard: list[frozenset[str]] = []

    def broken(_: frozenset[str]) -> None:
        raise RuntimeError("a listener's own bug")

    access.on_forget(broken)
    access.on_forget(heard.append)
    token, value = await access.issue("tb")
    await access.revoke("tb", token.id)
    assert heard == [frozenset({token.id})]
    assert store.rows == {}  # gone from the store too: it stays refused after a restart
    assert access.verify(value) is None


async def test_a_listing_shows_last_used_while_it_is_being_written() -> None:
    """A use is in memory until its write lands; a listing whose read of the store began
    before that sees it all the same (it was once shown as never used)."""
    store = MemoryTokenStore({"tb"})
    access = AccessTokens(store, clock=lambda: 42.0)
    token, value = await access.issue("tb")
    assert access.verify(value) is not None

    # The flush's write is under way while the listing runs.
    gate = asyncio.Event()
    store.during_touch = gate.wait
    flush = asyncio.create_task(access.flush_usage())
    await asyncio.sleep(0)
    assert [t.last_used for t in await access.list("tb")] == [42.0]
    gate.set()
    await flush
    store.during_touch = None

    # A listing read the store before the write landed; the flush ends before it returns.
    assert access.verify(value) is not None
    store.last_used.clear()  # as if this newer use were not written yet
    gate = asyncio.Event()
    store.during_list = gate.wait
    listing = asyncio.create_task(access.list("tb"))
    await asyncio.sleep(0)
    await access.flush_usage()
    gate.set()
    assert [t.last_used for t in await listing] == [42.0]
    assert store.last_used == {token.id: 42.0}
