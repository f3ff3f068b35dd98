"""The engine's fault class, on the toolbox's side: the pass that runs whenever the engine
comes back from an outage or a daemon restart (`reconcile_after_engine`: server by server,
charging nothing), before any operation acts on the toolbox (`sync_with_engine`,
`run_through_engine_faults`) and once per toolbox when the watch sees the engine back
(`reconcile_when_back`). The pass on agent start, which charges crashes, is engine/reconcile.py.

The pure planner (domain/planner.plan_engine_return) says what to do; this module does it.
Every function here runs under the toolbox's lock (tb.lock).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable

import structlog

from dtma.domain.planner import Held, plan_engine_return
from dtma.domain.records import RestartState
from dtma.domain.restart import from_wall
from dtma.domain.rollout_plan import SUCCEEDED
from dtma.engine import event_kinds as ev
from dtma.engine.server_restarts import ENGINE_RESTARTED
from dtma.engine.server_runner import ServerRunner
from dtma.engine.start_gate import start_container
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.errors import DockerUnavailable, DtmaError
from dtma.spec.models import ToolboxSpec

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
    """The engine came back (epoch `epoch`): each server is brought in line on its own
    (domain/planner.plan_engine_return). A runner that can go on is kept; a running container
    gets a new runner that re-attaches; a stopped or vanished one is restarted by a new runner,
    charging no budget; one that had given up stays failed. The serving map never empties (a
    server being replaced answers the retryable -32003), and a server that cannot start is its
    runner's to retry, under its budget, never a failure of the pass. Raises DockerUnavailable
    only if the engine goes away again (the next epoch brings another pass)."""
    if tb.spec is None or tb.revision is None:
        tb.reconciled_epoch = epoch
        return
    spec, revision = tb.spec, tb.revision
    await tb.runtime.join_network(tb.id)
    observed = await tb.runtime.list_managed(tb.id)
    by_id = {c.id: c for c in observed}
    held = {name: Held(r.container.id, r.state, _keepable(r)) for name, r in tb.servers.items()}
    saved = {
        n: st for n, st in (await tb.repo.restart_states(tb.id)).items() if st.revision == revision
    }
    counts: Counter[str] = Counter()
    for step in plan_engine_return(observed, revision, [s.name for s in spec.servers], held):
        old = tb.servers.get(step.server or "")
        counts[step.action] += 1
        if step.action == "remove":
            assert step.container_id is not None
            try:
                await tb.remove_container(by_id[step.container_id])
            except DockerUnavailable:
                raise
            except DtmaError as exc:  # not this pass's to fail for: the reaper tries again
                log.warning(
                    "reconcile_could_not_remove",
                    container=step.container_id[:12],
                    error=exc.message,
                )
            continue
        if step.action == "keep":
            assert old is not None
            old.rebase(epoch)
            continue
        if step.action == "leave":
            continue
        assert step.server is not None
        container = by_id.get(step.container_id or "") or (old.container if old else None)
        if container is None:  # nothing of it left at all, and no runner: start it afresh
            await _start_missing(tb, spec, revision, step.server, saved.get(step.server))
            continue
        restarts, history = _budget_of(tb, old, saved.get(step.server))
        new = tb.new_runner(
            spec.server(step.server),
            revision,
            container,
            fresh=step.action == "restart",
            spec=spec,
            restarts=restarts,
            history=history,
        )
        tb.replace_server(new)
        if old is not None:
            await old.halt()
        new.start_steady(restart_first=step.action == "restart")
        if step.action == "adopt":
            await tb.emit(
                ev.CONTAINER_ADOPTED,
                server=step.server,
                revision=revision,
                message=f"container {container.id[:12]}, re-attached after the engine's return",
            )
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


def _budget_of(
    tb: ToolboxRunner, old: ServerRunner | None, saved: RestartState | None
) -> tuple[int, tuple[float, ...]]:
    """The restart count and window a replacement carries on: its runner's, else the saved."""
    if old is not None:
        return old.restarts, old.restart_history
    if saved is not None:
        return saved.restarts, tuple(from_wall(saved.attempts, tb.clock(), time.time()))
    return 0, ()


async def _start_missing(
    tb: ToolboxRunner, spec: ToolboxSpec, revision: int, name: str, saved: RestartState | None
) -> None:
    """A server of the serving revision with neither a runner nor a container: start one.
    If it cannot start now, the next operation's reconcile tries again."""
    try:
        container = await start_container(tb, spec.server(name), revision, spec, None)
    except DockerUnavailable:
        raise
    except DtmaError as exc:
        log.warning("reconcile_could_not_start", server=name, error=exc.message)
        return
    restarts, history = _budget_of(tb, None, saved)
    runner = tb.new_runner(
        spec.server(name),
        revision,
        container,
        fresh=True,
        spec=spec,
        restarts=restarts,
        history=history,
    )
    tb.replace_server(runner)
    runner.start_steady()


async def reconcile_when_back(tb: ToolboxRunner) -> None:
    """The watch saw the engine back: reconcile `tb` under its lock (queued behind an operation
    holding it, which reconciles first itself). Takes the lock; never raises DockerUnavailable."""
    async with tb.lock:
        try:
            await sync_with_engine(tb)
        except DockerUnavailable as exc:
            # Gone again: the next epoch brings another pass.
            log.warning("reconcile_waits_for_the_engine", toolbox=tb.id, error=exc.message)
