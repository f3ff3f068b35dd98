"""Recovery on agent start: adopt what runs, finish or revert an interrupted rollout.

- A rollout was in flight (target_revision set): keep the new revision only if every one of its
  servers is running and passes the gate now; otherwise remove it and return to the serving one.
- Otherwise: adopt the serving revision's running containers without touching them (zero
  restarts), recreate missing or exited ones, and remove containers of any other revision.
"""

from __future__ import annotations

from dtma.domain.containers import ObservedContainer
from dtma.domain.gate import GateState
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
    """Bring `tb` to one consistent revision. Caller holds tb.lock."""
    await tb.emit(
        ev.RECOVERY_STARTED,
        revision=record.current_revision,
        message=f"{len(observed)} containers found"
        + (f", rollout to {record.target_revision} interrupted" if record.target_revision else ""),
    )
    tb.stopped = record.stopped
    outcome = None
    if record.target_revision is not None:
        outcome = await _finish_rollout(tb, record, observed)
        observed = await tb.runtime.list_managed(tb.id)
    if tb.revision is None and record.current_revision is not None:
        await _adopt_serving(tb, record.current_revision, observed)
    for container in observed:
        if container.id not in tb.known_container_ids():
            await tb.runtime.remove(container.id)
            await tb.emit(
                ev.CONTAINER_REMOVED,
                server=container.server,
                revision=container.revision,
                reason="not_wanted",
                message=f"container {container.id[:12]} of revision {container.revision}",
            )
    for op_id in interrupted_ops:
        state = outcome or "failed"
        await tb.repo.finish_operation(op_id, state, INTERRUPTED)
        await tb.emit(ev.OPERATION_FINISHED, reason=state, message=INTERRUPTED, operation=op_id)
    await tb.set_phase(tb.steady_phase() if tb.servers else "failed")


async def _finish_rollout(
    tb: ToolboxRunner, record: ToolboxRecord, observed: list[ObservedContainer]
) -> str:
    target = record.target_revision
    assert target is not None
    rev = await tb.repo.revision(tb.id, target)
    spec = ToolboxSpec.model_validate_json(rev.spec) if rev else None
    candidates = _latest_running(observed, target)
    if spec is not None and all(s.name in candidates for s in spec.servers):
        decision, runners = await deploy_and_gate(tb, spec, target, adopt=candidates)
        if decision.state is GateState.PASSED:
            tb.servers, tb.spec, tb.revision = runners, spec, target
            await tb.repo.mark_stable(tb.id, target)
            for runner in runners.values():
                runner.start_steady()
            await tb.emit(
                ev.RECOVERY_KEPT,
                revision=target,
                message=f"revision {target} is healthy; keeping it",
            )
            return SUCCEEDED
        for runner in runners.values():
            await runner.halt()
        reason = f"{decision.server}: {decision.reason}"
    else:
        reason = "not every server of the new revision is running"
    for container in observed:
        if container.revision == target:
            await tb.runtime.remove(container.id)
    await tb.repo.update_toolbox(tb.id, target_revision=None)
    await tb.emit(
        ev.RECOVERY_REVERTED,
        revision=record.current_revision,
        reason="gate_failed",
        message=f"revision {target} removed ({reason}); back to {record.current_revision}",
    )
    return ROLLED_BACK if record.current_revision is not None else "failed"


async def _adopt_serving(
    tb: ToolboxRunner, revision: int, observed: list[ObservedContainer]
) -> None:
    rev = await tb.repo.revision(tb.id, revision)
    if rev is None:
        return
    spec = ToolboxSpec.model_validate_json(rev.spec)
    tb.spec, tb.revision = spec, revision
    by_server = {
        c.server: c for c in sorted(observed, key=lambda c: c.started_at) if c.revision == revision
    }
    for server in spec.servers:
        container = by_server.get(server.name)
        if container is not None and (container.running or tb.stopped):
            runner = tb.new_runner(server, revision, container, fresh=False, spec=spec)
            if not container.running:
                runner.state = "stopped"
            tb.servers[server.name] = runner
            await tb.emit(
                ev.CONTAINER_ADOPTED,
                server=server.name,
                revision=revision,
                message=f"container {container.id[:12]}",
            )
            continue
        if container is not None:
            await tb.runtime.remove(container.id)
        fresh = await tb.create_container(server, revision, spec)
        tb.servers[server.name] = tb.new_runner(
            server, revision, fresh, fresh=True, spec=spec, restarts=1
        )
        await tb.emit(
            ev.SERVER_RESTARTED,
            server=server.name,
            revision=revision,
            reason="recovered",
            message=f"container {fresh.id[:12]} replaces "
            f"{'a missing' if container is None else 'an exited'} one",
        )
    for runner in tb.servers.values():
        if runner.state != "stopped":
            runner.start_steady()


def _latest_running(
    observed: list[ObservedContainer], revision: int
) -> dict[str, ObservedContainer]:
    out: dict[str, ObservedContainer] = {}
    for c in sorted(observed, key=lambda c: c.started_at):
        if c.revision == revision and c.running:
            out[c.server] = c
    return out
