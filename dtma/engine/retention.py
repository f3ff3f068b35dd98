"""The retention loop: prunes the state DB's events, operations, revisions and tool calls
periodically.

The work runs on the SQLite store's own thread (in batches), never on the event loop. A failed
pass is logged and retried at the next interval; cancellation ends the loop.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog

from dtma.domain.retention import Pruned, RetentionPolicy

log = structlog.get_logger("dtma.retention")

FIRST_PASS_DELAY_S = 30.0


class Prunable(Protocol):
    async def prune(self, policy: RetentionPolicy) -> Pruned: ...


async def prune_once(repo: Prunable, policy: RetentionPolicy) -> Pruned:
    """One pass; logs what it removed. Raises what the store raises."""
    pruned = await repo.prune(policy)
    if pruned.total:
        log.info(
            "state_pruned",
            events=pruned.events,
            operations=pruned.operations,
            revisions=pruned.revisions,
            calls=pruned.calls,
        )
    return pruned


async def retention_loop(
    repo: Prunable,
    policy: RetentionPolicy,
    interval: float,
    first_delay: float = FIRST_PASS_DELAY_S,
) -> None:
    """Prune `first_delay` after start (recovery goes first), then every `interval`."""
    await asyncio.sleep(min(first_delay, interval))
    while True:
        try:
            await prune_once(repo, policy)
        except Exception:  # a maintenance pass must not end the loop: retry next interval
            log.exception("state_prune_failed")
        await asyncio.sleep(interval)
