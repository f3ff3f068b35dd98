"""Recovery on agent start: finish or revert an interrupted rollout, then run the one reconcile
pass for the serving revision (engine/reconcile.reconcile_at_start, planned by
domain/planner.plan).

- A rollout was in flight (target_revision set): keep the new revision only if every one of its
  servers is running and passes the gate now; otherwise remove it and return to the serving one.
- Then: adopt running containers untouched (zero restarts), restart exited or missing ones at
  once (charged, but for what the engine stopped), and remove every container no server wants.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from dtma.domain.containers import ObservedContainer
from dtma.domain.gate import GateState
from dtma.domain.phase import Activity, Ended
from dtma.domain.planner import complete_revision
from dtma.domain.records import ToolboxRecord
from dtma.domain.rollout_plan import ROLLED_BACK, SUCCEEDED
from dtma.engine import event_kinds as ev
from dtma.engine.engine_return import ENGINE_RETRIES
from dtma.engine.reconcile import reconcile_at_start
from dtma.engine.start_gate import start_and_gate
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.errors import DockerUnavailable, DtmaError
from dtma.ports import ContainerRuntime, RecoveryStore
from dtma.spec.models import ToolboxSpec

FIRST_ANSWER_S = 1.0  # beyond the slowest server's probe timeout (first_answers)
INTERRUPTED = "interrupted by an agent restart"
FINISHED_BEFORE = "finished before the agent restarted"

log = structlog.get_logger(__name__)


async def recover_all(
    runtime: ContainerRuntime,
    repo: RecoveryStore,
    runner_for: Callable[[str], ToolboxRunner],
    wait: float,
) -> set[asyncio.Task[None]]:
    """Recover every known toolbox, each under its own lock and in a task of its own, and
    return once each is reconciled with the engine (its containers adopted, recreated or
    removed), or after `wait` seconds (an image pull, say). Returns the recoveries still
    running: a slow one, and every one still waiting for its adopted servers' first answers
    (`recover`), which the agent need not wait for to serve. Those toolboxes' operations queue
    behind their recovery. Raises DtmaError if Docker or the state cannot be read at all (the
    caller retries)."""
    observed = await runtime.list_managed()
    interrupted: dict[str, list[str]] = {}
    for op in await repo.running_operations():
        interrupted.setdefault(op.toolbox, []).append(op.id)
    records = await repo.toolboxes()
    known = {r.id for r in records}
    for op_toolbox, op_ids in interrupted.items():
        if op_toolbox not in known:  # e.g. a delete that finished its work
            for op_id in op_ids:
                await repo.finish_operation(op_id, "succeeded", FINISHED_BEFORE)

    reconciled = {r.id: asyncio.Event() for r in records}

    async def one(record: ToolboxRecord) -> None:
        tb = runner_for(record.id)
        try:
            async with tb.lock:
                await recover_or_fail(
                    tb,
                    record,
                    [c for c in observed if c.toolbox == record.id],
                    interrupted.get(record.id, []),
                    reconciled[record.id],
                )
        finally:
            reconciled[record.id].set()  # failed or cancelled: nothing left to wait for

    tasks = [asyncio.create_task(one(r), name=f"recover-{r.id}") for r in records]
    if not tasks:
        return set()
    try:
        async with asyncio.timeout(wait):
            for event in reconciled.values():
                await event.wait()
    except TimeoutError:
        pass
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
    for task, record in zip(tasks, records, strict=True):
        if not reconciled[record.id].is_set():
            log.warning("recovery_continues_in_background", task=task.get_name())
        elif task.done():
            task.result()  # recover_or_fail ends every toolbox; this re-raises the unexpected
    return {task for task in tasks if not task.done()}


async def recover_or_fail(
    tb: ToolboxRunner,
    record: ToolboxRecord,
    observed: list[ObservedContainer],
    interrupted_ops: list[str],
    reconciled: asyncio.Event | None = None,
) -> None:
    """recover(), but a toolbox that cannot be brought back (its image or secret is gone) ends
    `failed` with the reason in an event (and so in the error journal) instead of keeping the
    agent from starting. Its containers stay known (not reaped) and unsupervised; DELETE or a
    new apply (always a new revision) fixes it. An engine that goes away meanwhile is not the
    toolbox's failure: recovery waits for it and starts over on what the engine holds then (at
    most ENGINE_RETRIES times). Caller holds tb.lock."""
    interrupted_ops = list(interrupted_ops)  # emptied as they are finished (_finish_ops)
    await tb.begin(Activity.RECOVERING)  # `deploying` until it ends (domain/phase.py)
    try:
        await _recover_through_engine_faults(tb, record, observed, interrupted_ops, reconciled)
    finally:
        tb.activity_over()  # ended already, unless an exception cut the way out short


async def _recover_through_engine_faults(
    tb: ToolboxRunner,
    record: ToolboxRecord,
    observed: list[ObservedContainer],
    interrupted_ops: list[str],
    reconciled: asyncio.Event | None,
) -> None:
    engine_stopped: set[str] = set()
    for attempt in range(1, ENGINE_RETRIES + 1):
        epoch = tb.engine.epoch
        try:
            if attempt > 1:
                record = await _reread(tb, record)
                observed = await tb.runtime.list_managed(tb.id)
            await recover(tb, record, observed, interrupted_ops, engine_stopped, reconciled)
            return
        except DockerUnavailable as exc:
            if attempt == ENGINE_RETRIES or await tb.engine.confirm(epoch):
                await _fail(tb, record, interrupted_ops, exc)
                return
            log.warning("recovery_waits_for_the_engine", toolbox=tb.id, error=exc.message)
            # What ran when the engine went (found running, adopted or started by this
            # attempt) and is found exited by the next was stopped by the engine, not crashed:
            # no server's restart budget pays for it.
            engine_stopped |= {c.id for c in observed if c.state == "running"}
            engine_stopped |= tb.known_container_ids()
            # What this attempt adopted or started is let go (the containers stay): the next
            # attempt plans from the engine's listing again, as a fresh start would.
            await tb.halt()
            tb.drop_servers()
            await tb.engine.wait_up()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await _fail(tb, record, interrupted_ops, exc)
            return


async def _reread(tb: ToolboxRunner, record: ToolboxRecord) -> ToolboxRecord:
    """The toolbox's row as the last attempt left it (a rollout it reverted is no longer in
    flight)."""
    return await tb.repo.toolbox(tb.id) or record


async def _fail(
    tb: ToolboxRunner, record: ToolboxRecord, interrupted_ops: list[str], exc: Exception
) -> None:
    """The toolbox cannot be brought back: `failed`, its interrupted operations failed."""
    if isinstance(exc, DtmaError):
        reason = exc.message
    else:
        log.exception("recovery_crashed", toolbox=tb.id)
        reason = f"internal error: {type(exc).__name__}"
    reason = tb.journal.redact(reason, 1000)
    await tb.halt()
    await tb.emit(
        ev.RECOVERY_FAILED,
        revision=record.current_revision,
        reason="recovery_failed",
        message=f"cannot recreate the toolbox: {reason}",
    )
    await tb.clear_target(record.target_revision or -1)
    await _finish_ops(tb, interrupted_ops, "failed", f"{INTERRUPTED}; {reason}")
    await tb.end(Ended.RECOVERY_FAILED)


async def _finish_ops(tb: ToolboxRunner, op_ids: list[str], state: str, error: str) -> None:
    """End the operations the agent's restart interrupted, each once: a recovery attempt that
    the engine cuts short after the outcome was decided must not decide it again."""
    while op_ids:
        op_id = op_ids.pop(0)
        await tb.repo.finish_operation(op_id, state, error)
        await tb.emit(ev.OPERATION_FINISHED, reason=state, message=INTERRUPTED, operation=op_id)


async def recover(
    tb: ToolboxRunner,
    record: ToolboxRecord,
    observed: list[ObservedContainer],
    interrupted_ops: list[str],
    engine_stopped: set[str] | frozenset[str] = frozenset(),
    reconciled: asyncio.Event | None = None,
) -> None:
    """Bring `tb` to one consistent revision. Caller holds tb.lock. Idempotent. The ids in
    `engine_stopped` were running when the engine went away: their exits are not crashes.
    `reconciled` is set once the containers are (before the wait for first answers)."""
    await tb.emit(
        ev.RECOVERY_STARTED,
        revision=record.current_revision,
        message=f"{len(observed)} containers found"
        + (f", rollout to {record.target_revision} interrupted" if record.target_revision else ""),
    )
    epoch = tb.engine.epoch  # what the engine showed from here on is reconciled
    tb.mark_stopped(record.stopped)
    await tb.runtime.join_network(tb.id)  # an agent in a container must be on it to probe
    serving, outcome = record.current_revision, None
    if record.target_revision is not None:
        outcome, kept = await _finish_rollout(tb, record, observed)
        if kept:
            serving = record.target_revision
        await _finish_ops(tb, interrupted_ops, outcome, INTERRUPTED)  # decided: kept or reverted
        observed = await tb.runtime.list_managed(tb.id)
    await reconcile_at_start(tb, serving, observed, engine_stopped, epoch)
    tb.reconciled_epoch = epoch
    await _finish_ops(tb, interrupted_ops, outcome or "failed", INTERRUPTED)
    if reconciled is not None:
        reconciled.set()  # the agent may serve (/v1/ready) without waiting for what follows
    # Adopted servers count as serving once their first probe (at once: not fresh) answers:
    # waited for here, still `deploying`, so that the agent's restart does not flip a healthy
    # toolbox to degraded and back. Bounded: one that does not answer leaves it degraded until
    # it does. Its operations wait behind this (the toolbox's lock); the agent does not.
    await tb.first_answers(
        FIRST_ANSWER_S + max((r.spec.health.timeout for r in tb.servers.values()), default=0)
    )
    await tb.end(Ended.SUCCEEDED)


async def _finish_rollout(
    tb: ToolboxRunner, record: ToolboxRecord, observed: list[ObservedContainer]
) -> tuple[str, bool]:
    target = record.target_revision
    assert target is not None
    rev = await tb.repo.revision(tb.id, target)
    spec = ToolboxSpec.model_validate_json(rev.spec) if rev else None
    candidates = (
        complete_revision(observed, target, [s.name for s in spec.servers]) if spec else None
    )
    if spec is not None and candidates is not None:
        decision, runners = await start_and_gate(tb, spec, target, running=candidates, adopt=True)
        if decision.state is GateState.PASSED:
            tb.commit_revision(target, spec, runners, stopped=tb.stopped)
            await tb.mark_stable(target)
            await tb.emit(
                ev.RECOVERY_KEPT,
                revision=target,
                message=f"revision {target} is healthy; keeping it",
            )
            return SUCCEEDED, True
        for runner in runners.values():
            await runner.halt()
        reason = f"{decision.server}: {decision.reason}"
    else:
        reason = "not every server of the new revision is running"
    for container in observed:
        if container.revision == target:
            await tb.remove_container(container)
    await tb.clear_target(target)
    await tb.emit(
        ev.RECOVERY_REVERTED,
        revision=record.current_revision,
        reason="gate_failed",
        message=f"revision {target} removed ({reason}); back to {record.current_revision}",
    )
    return (ROLLED_BACK if record.current_revision is not None else "failed"), False
