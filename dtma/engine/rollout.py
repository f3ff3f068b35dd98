"""Rollouts: deploy a revision, hold the group gate, then keep it or revert (DESIGN.md).

start_first: the new revision starts beside the old one; the old one is removed only after the
gate passes, and on failure the new containers are removed, so the old one never stopped serving.
stop_first: the old revision is stopped first; on failure it is started again and gated.
A rollback (explicit, or the stop_first revert) is never itself rolled back.

This module is thin: domain/rollout_plan.py plans the steps and maps the gate's verdict to the
result; engine/executor.py runs the steps.
"""

from __future__ import annotations

from dtma import lazy_import
from dtma.domain.gate import GateState
from dtma.domain.phase import Ended
from dtma.domain.rollout_plan import (
    FAILED,
    ROLLED_BACK,
    SUCCEEDED,
    SUPERSEDED,
    Serving,
    outcome,
    plan_cleanup,
    plan_rollout,
)
from dtma.engine.executor import RolloutExecutor
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.errors import DtmaError
from dtma.spec.models import ToolboxSpec

__all__ = ["FAILED", "ROLLED_BACK", "SUCCEEDED", "run_rollout"]


async def run_rollout(
    tb: ToolboxRunner, to_rev: int, op_id: str, *, is_rollback: bool
) -> tuple[str, str | None]:
    """Roll `tb` to revision `to_rev`. Returns (operation state, error). Caller holds tb.lock.

    Last write wins: an apply whose revision is no longer the newest applied one does nothing
    (queued) or fails its gate at once (in flight), and the newer one runs next. Any exception
    removes what this rollout started, restores a stop_first revision and re-raises, so the
    operation ends `failed` with the containers consistent."""
    newer = None if is_rollback else tb.superseding(to_rev)
    if newer is not None:
        return FAILED, f"superseded by revision {newer} before it started"
    if is_rollback and to_rev == tb.revision and tb.servers and not tb.stopped:
        # Already there: nothing to do. Rolling "to" it would start a copy beside the serving
        # containers, and a failed gate would then remove both (they share the revision).
        return SUCCEEDED, None
    record = await tb.repo.revision(tb.id, to_rev)
    if record is None:
        raise DtmaError(f"revision {to_rev} does not exist")
    spec = ToolboxSpec.model_validate_json(record.spec)
    # The probes and gateway calls need the MCP SDK's client side, which an agent that had no
    # toolbox yet has not loaded: load it now (seconds of CPU on a busy host, in a thread),
    # before any container starts and so outside the gate's healthy_deadline. Idempotent.
    await lazy_import.load(lazy_import.MCP_CLIENT)
    run = RolloutExecutor(tb, spec, to_rev, is_rollback=is_rollback)
    try:
        return await _roll(run)
    except Exception:
        old_rev = run.old_revision
        await run.run_all(
            plan_cleanup(
                committed=tb.revision == to_rev and old_rev != to_rev,
                target=to_rev,
                current=old_rev,
                order=spec.rollout.order,
                any_stopped=any(r.state == "stopped" for r in run.old_servers.values()),
                toolbox_stopped=tb.stopped,
            )
        )
        raise
    finally:
        tb.end_gating()  # whatever happened, no runner of this rollout is under a gate now


async def _roll(run: RolloutExecutor) -> tuple[str, str | None]:
    old_rev, had_stable = run.old_revision, bool(run.old_servers)
    order = run.spec.rollout.order
    current = Serving(old_rev) if had_stable and old_rev is not None else None
    await run.run(plan_rollout(current, run.target, order, run.is_rollback))
    decision = run.decision
    assert decision is not None
    passed = decision.state is GateState.PASSED
    result = outcome(
        "passed" if passed else "failed",
        order,
        run.spec.rollout.auto_revert,
        had_stable,
        run.is_rollback,
        decision.reason == SUPERSEDED,
        target=run.target,
        current=old_rev,
    )
    await run.run(result.steps)
    if run.restored is False and result.if_restore_fails is not None:
        result = result.if_restore_fails
    failure = None
    if not passed:
        failure = f"{decision.server or 'toolbox'}: {decision.reason}: {decision.detail}"
        failure += result.note
    if result.settles:  # the verdict ends the rollout's `deploying` before the operation ends
        error = run.tb.journal.redact(failure, 2000) if failure else ""
        await run.tb.end(Ended.SUCCEEDED if passed else Ended.FAILED, error)
    return result.state, failure
