"""Recovery on agent start: finish or revert an interrupted rollout, then execute the planner's
steps for the serving revision (domain/planner.py).

- A rollout was in flight (target_revision set): keep the new revision only if every one of its
  servers is running and passes the gate now; otherwise remove it and return to the serving one.
- Then: adopt running containers untouched (zero restarts), recreate exited or missing ones, and
  remove every container no server wants.
"""

from __future__ import annotations

from dtma.domain.containers import ObservedContainer
from dtma.domain.gate import GateState
from dtma.domain.planner import complete_revision, plan_serving
from dtma.domain.records import ToolboxRecord
from dtma.engine import event_kinds as ev
from dtma.engine.rollout import ROLLED_BACK, SUCCEEDED, deploy_and_gate
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.spec.models import ToolboxSpec

INTERRUPTED = "interrupted by an agent restart"


async def recover(
    tb: ToolboxRunner,
    record: ToolboxRecord,
    observed: list[ObservedContainer],
    interrupted_ops: list[str],
) -> None:
    """Bring `tb` to one consistent revision. Caller holds tb.lock. Idempotent."""
    await tb.emit(
        ev.RECOVERY_STARTED,
        revision=record.current_revision,
        message=f"{len(observed)} containers found"
        + (f", rollout to {record.target_revision} interrupted" if record.target_revision else ""),
    )
    tb.stopped = record.stopped
    await tb.runtime.join_network(tb.id)  # an agent in a container must be on it to probe
    serving, outcome = record.current_revision, None
    if record.target_revision is not None:
        outcome, kept = await _finish_rollout(tb, record, observed)
        if kept:
            serving = record.target_revision
        observed = await tb.runtime.list_managed(tb.id)
    await _reconcile_serving(tb, serving, observed)
    for op_id in interrupted_ops:
        state = outcome or "failed"
        await tb.repo.finish_operation(op_id, state, INTERRUPTED)
        await tb.emit(ev.OPERATION_FINISHED, reason=state, message=INTERRUPTED, operation=op_id)
    await tb.set_phase(tb.steady_phase() if tb.servers else "failed")


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
        decision, runners = await deploy_and_gate(tb, spec, target, adopt=candidates)
        if decision.state is GateState.PASSED:
            tb.servers, tb.spec, tb.revision = runners, spec, target
            await tb.repo.mark_stable(tb.id, target)
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
    await tb.repo.update_toolbox(tb.id, target_revision=None)
    await tb.emit(
        ev.RECOVERY_REVERTED,
        revision=record.current_revision,
        reason="gate_failed",
        message=f"revision {target} removed ({reason}); back to {record.current_revision}",
    )
    return (ROLLED_BACK if record.current_revision is not None else "failed"), False


async def _reconcile_serving(
    tb: ToolboxRunner, revision: int | None, observed: list[ObservedContainer]
) -> None:
    spec = None
    if revision is not None:
        rev = await tb.repo.revision(tb.id, revision)
        spec = ToolboxSpec.model_validate_json(rev.spec) if rev else None
    if spec is not None:
        tb.spec, tb.revision = spec, revision
    servers = [s.name for s in spec.servers] if spec else []
    by_id = {c.id: c for c in observed}
    adopted = tb.known_container_ids()
    for step in plan_serving(observed, revision if spec else None, servers, stopped=tb.stopped):
        if step.action == "remove":
            assert step.container_id is not None
            await tb.remove_container(by_id[step.container_id])
            await tb.emit(
                ev.CONTAINER_REMOVED,
                server=step.server,
                reason=step.reason,
                revision=by_id[step.container_id].revision,
                message=f"container {step.container_id[:12]}",
            )
            continue
        assert spec is not None
        assert revision is not None
        assert step.server is not None
        server = spec.server(step.server)
        if step.action == "recreate":
            fresh = await tb.create_container(server, revision, spec)
            tb.servers[server.name] = tb.new_runner(
                server, revision, fresh, fresh=True, spec=spec, restarts=1
            )
            await tb.emit(
                ev.SERVER_RESTARTED,
                server=server.name,
                revision=revision,
                reason="recovered",
                message=f"container {fresh.id[:12]} replaces an {step.reason} one",
            )
            continue
        assert step.container_id is not None
        if step.container_id in adopted:
            continue  # the kept revision's runners already hold it
        runner = tb.new_runner(server, revision, by_id[step.container_id], fresh=False, spec=spec)
        if step.action == "adopt_stopped":
            runner.state = "stopped"
        tb.servers[server.name] = runner
        await tb.emit(
            ev.CONTAINER_ADOPTED,
            server=server.name,
            revision=revision,
            message=f"container {step.container_id[:12]}",
        )
    for runner in tb.servers.values():
        if runner.state != "stopped":
            runner.start_steady()
