"""The engine's fault class, on the toolbox's side: the one reconcile pass (engine/reconcile.py)
runs whenever the engine comes back from an outage or a daemon restart
(`reconcile_after_engine`: its inputs are the runners, and nothing is charged), before any
operation acts on the toolbox (`sync_with_engine`, `run_through_engine_faults`) and once per
toolbox when the watch sees the engine back (`reconcile_when_back`).

Every function here runs under the toolbox's lock (tb.lock).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from dtma.domain.planner import Held, Inputs
from dtma.domain.rollout_plan import SUCCEEDED
from dtma.engine import event_kinds as ev
from dtma.engine.reconcile import reconcile, saved_restarts
from dtma.engine.server_restarts import ENGINE_RESTARTED
from dtma.engine.server_runner import ServerRunner
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.errors import DockerUnavailable

ENGINE_RETRIES = 5  # times an operation is run again after the engine went away under it

log = structlog.get_logger(__name__)

Work = Callable[[], Awaitable[tuple[str, str | None]]]


async def run_through_engine_faults(
    tb: ToolboxRunner, work: Work, revision: int | None
) -> tuple[str, str | None]:
    """Run an operation's `work` once the engine answers and `tb` is reconciled with it. If
    the engine goes away or restarts under the work, wait for it, reconcile, and run the work
    again (at most ENGINE_RETRIES times): an engine outage is never the toolbox's failure.
    A rollout that had already switched to `revision` before the engine went is done."""
    before = tb.revision
    for attempt in range(1, ENGINE_RETRIES + 1):
        epoch = tb.engine.epoch
        try:
            await sync_with_engine(tb)
            if attempt > 1 and revision is not None and tb.revision == revision != before:
                return SUCCEEDED, None
            epoch = tb.engine.epoch
            return await work()
        except DockerUnavailable as exc:
            if attempt == ENGINE_RETRIES or await tb.engine.confirm(epoch):
                raise
            log.warning("operation_waits_for_the_engine", attempt=attempt, error=exc.message)
    raise AssertionError("unreachable")


async def sync_with_engine(tb: ToolboxRunner) -> None:
    """Wait until the engine answers, then reconcile `tb` for every engine epoch its runners
    have not seen yet. Raises DockerUnavailable if the engine goes away meanwhile."""
    await tb.engine.wait_up()
    while tb.reconciled_epoch != tb.engine.epoch:
        await reconcile_after_engine(tb, tb.engine.epoch)


async def reconcile_after_engine(tb: ToolboxRunner, epoch: int) -> None:
    """The engine came back (epoch `epoch`): the one reconcile pass (engine/reconcile.py) with
    the runners as what is held and no exit charged. A runner that can go on is kept; a running
    container gets a new runner that re-attaches; a stopped or vanished one is restarted by a
    new runner, charging no budget; one that had given up stays failed. The serving map never
    empties (a server being replaced answers the retryable -32003), and a server that cannot
    start is its runner's to retry, under its budget, never a failure of the pass. Raises
    DockerUnavailable only if the engine goes away again (the next epoch brings another pass)."""
    if tb.spec is None or tb.revision is None:
        tb.reconciled_epoch = epoch
        return
    spec, revision = tb.spec, tb.revision
    await tb.runtime.join_network(tb.id)
    inputs = Inputs(
        await tb.runtime.list_managed(tb.id),
        revision,
        [s.name for s in spec.servers],
        held={n: Held(r.container.id, r.state, _keepable(r)) for n, r in tb.servers.items()},
        stopped=tb.stopped,
    )
    saved = await saved_restarts(tb, revision)
    counts = await reconcile(tb, spec, inputs, saved, epoch=epoch, at_once=False)
    tb.reconciled_epoch = epoch
    await tb.emit(
        ev.TOOLBOX_RECONCILED,
        revision=revision,
        reason=ENGINE_RESTARTED,
        message=", ".join(f"{n} {what}" for what, n in sorted(counts.items())) or "nothing to do",
    )
    await tb.servers_reconciled()


def _keepable(runner: ServerRunner) -> bool:
    """A runner that can go on through the engine's return: running, not waiting on the
    engine, and over HTTP (its session goes to the container, not through the daemon; a
    stdio attach went down with the daemon and is re-opened by a new runner)."""
    return runner.state == "running" and not runner.parked and runner.spec.transport != "stdio"


async def reconcile_when_back(tb: ToolboxRunner) -> None:
    """The watch saw the engine back: reconcile `tb` under its lock (queued behind an operation
    holding it, which reconciles first itself). Takes the lock; never raises DockerUnavailable."""
    async with tb.lock:
        try:
            await sync_with_engine(tb)
        except DockerUnavailable as exc:
            # Gone again: the next epoch brings another pass.
            log.warning("reconcile_waits_for_the_engine", toolbox=tb.id, error=exc.message)
