"""The tool-call journal: every tools/call through a toolbox's MCP endpoint, off the hot path.

`record()` is synchronous and cheap: it bumps the Prometheus series and appends the row to an
in-memory batch; `flush()` (every FLUSH_INTERVAL_S from `flush_loop`, before every read, and at
shutdown) writes the batch in one transaction on the SQLite thread. So a call never waits on
disk. The batch is bounded: if the store stalls past MAX_PENDING rows, the oldest are dropped
(and counted in the log), never the agent's memory. Rows carry sizes and outcomes, never a
call's arguments or result; retention (engine/retention.py) bounds the table.
Loop-only; not thread-safe.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from dtma.domain.access import ToolCall
from dtma.observability.metrics import LabelledChildren, Metrics
from dtma.ports import CallStore

log = structlog.get_logger(__name__)

FLUSH_INTERVAL_S = 0.5
MAX_PENDING = 10_000
OFFERED_TTL_S = 1.0
OFFERED_KEPT = 1024  # toolboxes' offered sets remembered before stale ones are dropped
OTHER = "other"  # the metric label of a server or tool the toolbox does not offer


class CallJournal:
    def __init__(
        self,
        store: CallStore,
        metrics: Metrics | None = None,
        offered: Callable[[str], frozenset[str]] | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        """`offered(toolbox)` gives the exported tool names offered now: a name a client made
        up is counted under OTHER, so clients cannot grow the metrics without bound."""
        self._store = store
        self._metrics = metrics
        self._offered = offered
        self._offered_seen: dict[str, tuple[float, frozenset[str]]] = {}
        self._calls = LabelledChildren(metrics.tool_calls, metrics) if metrics is not None else None
        self._durations = (
            LabelledChildren(metrics.tool_call_duration, metrics) if metrics is not None else None
        )
        self._pending: deque[ToolCall] = deque(maxlen=max_pending)
        self._dropped = 0
        self._lock = asyncio.Lock()

    def record(self, call: ToolCall) -> None:
        if len(self._pending) == self._pending.maxlen:
            self._dropped += 1
        self._pending.append(call)
        if self._calls is not None and self._durations is not None:
            server, tool = self._labels(call)
            self._calls(call.toolbox, server, tool, call.outcome).inc()
            self._durations(call.toolbox, server).observe(call.duration)

    def _labels(self, call: ToolCall) -> tuple[str, str]:
        offered = self._offered_now(call.toolbox)
        if f"{call.server}__{call.tool}" in offered:
            return call.server, call.tool
        servers = {name.partition("__")[0] for name in offered}
        return (call.server if call.server in servers else OTHER), OTHER

    def _offered_now(self, toolbox: str) -> frozenset[str]:
        """The toolbox's offered names, read at most once per OFFERED_TTL_S (it walks every
        serving server's tools; a label is at most that stale after a rollout)."""
        if self._offered is None:
            return frozenset()
        now = time.monotonic()
        seen = self._offered_seen.get(toolbox)
        if seen is None or now - seen[0] >= OFFERED_TTL_S:
            if len(self._offered_seen) >= OFFERED_KEPT:  # deleted toolboxes' sets, mostly
                self._offered_seen = {
                    k: v for k, v in self._offered_seen.items() if now - v[0] < OFFERED_TTL_S
                }
            seen = (now, self._offered(toolbox))
            self._offered_seen[toolbox] = seen
        return seen[1]

    async def flush(self) -> int:
        """Write what is pending; returns the number of rows written. On a store error the
        batch goes back in front of newer rows (bounded as ever) and the error is raised."""
        async with self._lock:
            batch = list(self._pending)
            self._pending.clear()
            if self._dropped:
                log.warning("tool_calls_dropped", count=self._dropped, reason="store too slow")
                self._dropped = 0
            if not batch:
                return 0
            try:
                await self._store.append_calls(batch)
            except BaseException:
                newer = list(self._pending)
                self._pending.clear()
                self._pending.extend(batch + newer)
                raise
            return len(batch)

    async def page(self, toolbox: str, since: int, limit: int) -> list[dict[str, Any]]:
        """A page of the toolbox's calls after cursor `since` (what is pending is written
        first, so a call that has returned is always listed)."""
        await self.flush()
        return await self._store.calls(toolbox, since, limit)


async def flush_loop(
    *flushers: Callable[[], Awaitable[Any]], interval: float = FLUSH_INTERVAL_S
) -> None:
    """Run every flusher each `interval` until cancelled; a failed flush is logged and retried
    at the next tick."""
    while True:
        await asyncio.sleep(interval)
        for flush in flushers:
            try:
                await flush()
            except Exception:  # a maintenance write must not end the loop
                log.exception("flush_failed")
