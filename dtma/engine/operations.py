"""Operations (apply, rollback, restart, stop, start, refresh, delete): each is recorded in the
state DB before it runs, run under its toolbox's lock (ToolboxRunner.run_operation) once the
engine answers and the toolbox is reconciled with it (engine/reconcile.py), and can be waited
for. An operation submitted while the engine is down is recorded and queued, and the submitter
is told so with a 503 (DockerUnavailable) naming it: nothing is lost.

Concurrency: event loop only; one Operations per agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from dtma.cancellation import cancel_and_wait
from dtma.domain.records import OperationRecord
from dtma.engine.engine_return import run_through_engine_faults
from dtma.engine.engine_watch import EngineWatch
from dtma.engine.supervisor import watch_task
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.errors import NotFound, OperationQueued
from dtma.ports import StateStore

Work = Callable[[str], Awaitable[tuple[str, str | None]]]


class Operations:
    def __init__(self, repo: StateStore, engine: EngineWatch) -> None:
        self._repo = repo
        self._engine = engine
        self._done: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(
        self,
        tb: ToolboxRunner,
        kind: str,
        revision: int | None,
        work: Work,
        params: dict[str, Any] | None = None,
    ) -> str:
        """Record the operation, queue it on its toolbox, and return its id. Raises
        OperationQueued (after recording and queueing it) while the engine is down."""
        op_id = "op-" + secrets.token_hex(8)
        await self._repo.add_operation(op_id, kind, tb.id, revision, params)
        done = self._done[op_id] = asyncio.Event()

        async def run() -> None:
            try:
                await tb.run_operation(
                    op_id,
                    lambda: run_through_engine_faults(tb, lambda: work(op_id), revision),
                    revision,
                    supersedable=kind == "apply",
                )
            finally:
                done.set()
                # Waiters hold the event already; later ones read the final state from the DB.
                self._done.pop(op_id, None)

        task = asyncio.create_task(run(), name=f"{kind}-{tb.id}-{op_id}")
        watch_task(task, f"operation {op_id}", "operation")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not self._engine.up:
            raise OperationQueued(
                f"Docker engine unreachable ({self._engine.problem()}): operation {op_id} "
                f"({kind}{f' of revision {revision}' if revision is not None else ''}) is "
                "recorded and runs once the engine is back; GET /v1/operations/{op} follows it",
                op_id,
            )
        return op_id

    async def wait(self, op_id: str, timeout: float) -> OperationRecord:
        """Wait up to `timeout` for the operation to finish; return its record either way."""
        done = self._done.get(op_id)
        if done is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await done.wait()
        record = await self._repo.operation(op_id)
        if record is None:
            raise NotFound(f"no operation {op_id}")
        return record

    async def stop(self) -> None:
        """Agent shutdown: operations still running stay `running` in the DB; the next start's
        recovery finishes them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            await cancel_and_wait(task)
