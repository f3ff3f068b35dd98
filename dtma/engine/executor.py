"""The one executor: runs the steps of domain/rollout_plan.py through the toolbox runner's ports
(the "start, then gate" path they share is engine/start_gate.py).

Every function here runs under the toolbox's lock (tb.lock), inside an operation or recovery.
State changes go through ToolboxRunner's methods (commit_revision, begin_gating, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from dtma.domain import gate as gate_reasons
from dtma.domain.containers import ObservedContainer
from dtma.domain.gate import Decision, GateState
from dtma.domain.phase import Activity, Ended
from dtma.domain.rollout_plan import (
    Announce,
    ClearTarget,
    Commit,
    MarkStable,
    RemoveRevision,
    RemoveServers,
    ReportGate,
    RestoreStopped,
    RotateServer,
    StartAndGate,
    Step,
    StopServers,
)
from dtma.engine import event_kinds as ev
from dtma.engine.server_runner import ServerRunner
from dtma.engine.start_gate import start_and_gate
from dtma.engine.tool_contracts import check_tool_contracts
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.errors import DtmaError
from dtma.spec.models import ToolboxSpec

log = structlog.get_logger(__name__)


async def restore_stopped(
    tb: ToolboxRunner, servers: Mapping[str, ServerRunner], revision: int
) -> bool:
    """stop_first revert: start the old containers again (recreate any that are gone) and gate
    them as fresh processes (their stdio sessions need a new initialize). A rollback, so never
    rolled back itself. Returns whether the gate passed; either way the runners serve."""
    assert tb.spec is not None
    spec = tb.spec
    await tb.emit(
        ev.ROLLBACK_STARTED,
        revision=revision,
        reason="stop_first_revert",
        message=f"restarting revision {revision}",
    )
    restarted: dict[str, ObservedContainer] = {}
    for name, runner in servers.items():
        try:
            await tb.runtime.start(runner.container.id)
            seen = await tb.runtime.inspect(runner.container.id)
            if seen is not None and seen.running:
                restarted[name] = seen
        except DtmaError:
            await tb.remove_container(runner.container)
    decision, runners = await start_and_gate(tb, spec, revision, running=restarted, announce=False)
    tb.commit_revision(revision, spec, runners, stopped=tb.stopped)
    for runner in runners.values():
        runner.start_steady()
    if decision.state is GateState.PASSED:
        await tb.emit(ev.ROLLBACK_PASSED, revision=revision, reason=gate_reasons.GATE_PASSED)
        # What served before serves again: the rollout deploys nothing any more.
        await tb.end(Ended.SUCCEEDED)
        return True
    await tb.emit(
        ev.ROLLBACK_FAILED,
        server=decision.server,
        revision=revision,
        reason=decision.reason,
        message=decision.detail,
    )
    return False


async def rotate_server(tb: ToolboxRunner, step: RotateServer) -> str | None:
    """Start one new container of the server beside the old one and gate it alone; on a pass
    it replaces the old one, else it is removed. Returns the failure, or None."""
    assert tb.spec is not None
    old = tb.servers[step.server]
    decision, runners = await start_and_gate(
        tb,
        tb.spec,
        step.revision,
        only=[old.name],
        restarts={old.name: old.restarts + 1},
        announce=False,
    )
    new = runners.get(old.name)
    if decision.state is not GateState.PASSED or new is None:
        if new is not None:
            await new.remove()
        await tb.emit(
            ev.SECRETS_ROTATION_FAILED,
            server=old.name,
            revision=step.revision,
            reason=decision.reason,
            message=decision.detail,
        )
        return f"{old.name}: {decision.reason}: {decision.detail}"
    await old.remove()
    tb.replace_server(new)
    new.start_steady()
    await tb.emit(
        ev.SECRETS_ROTATED,
        server=old.name,
        revision=step.revision,
        message=f"container {new.container.id[:12]} replaces {old.container.id[:12]}",
    )
    return None


class RolloutExecutor:
    """Runs one rollout's steps (domain/rollout_plan.py) in order. Holds what the steps share:
    the target spec, the servers that served before, the gate's verdict and its runners, and
    whether a stop_first restore passed. Caller holds tb.lock; one use per rollout."""

    def __init__(
        self, tb: ToolboxRunner, spec: ToolboxSpec, target: int, *, is_rollback: bool
    ) -> None:
        self.tb = tb
        self.spec = spec
        self.target = target
        self.is_rollback = is_rollback
        self.old_servers = dict(tb.servers)
        self.old_revision = tb.revision
        self.decision: Decision | None = None
        self.runners: dict[str, ServerRunner] = {}
        self.restored: bool | None = None
        self._kinds = (
            (ev.ROLLBACK_STARTED, ev.ROLLBACK_PASSED, ev.ROLLBACK_FAILED)
            if is_rollback
            else (ev.ROLLOUT_STARTED, ev.ROLLOUT_PASSED, ev.ROLLOUT_FAILED)
        )

    async def run(self, steps: Sequence[Step]) -> None:
        """Run `steps` in order; the first exception stops them and propagates."""
        for step in steps:
            await self.apply(step)

    async def run_all(self, steps: Sequence[Step]) -> None:
        """Cleanup after an exception: try every step, log the ones that fail, raise nothing."""
        for step in steps:
            try:
                await self.apply(step)
            except Exception:
                log.exception("rollout_cleanup_failed", step=step.action, revision=self.target)

    async def apply(self, step: Step) -> None:
        tb = self.tb
        match step:
            case Announce():
                await tb.announce(step.revision)
                await tb.begin(Activity.DEPLOYING)
                await tb.emit(
                    self._kinds[0],
                    revision=step.revision,
                    reason=self.spec.rollout.order,
                    message=f"from revision {step.from_revision} to {step.revision} "
                    f"({len(self.spec.servers)} servers)",
                )
            case StopServers():
                for runner in self.old_servers.values():
                    await tb.stop_server(runner, reason=step.reason)
            case StartAndGate():
                abort = (lambda: tb.superseding(step.revision)) if step.abortable else None
                decision, self.runners = await start_and_gate(
                    tb, self.spec, step.revision, abort=abort
                )
                # strict: a broken tool contract fails a gate that passed. Until the commit
                # (or the removal) the watcher must still see the new runners' exits.
                tb.begin_gating(self.runners)
                self.decision = await check_tool_contracts(
                    tb,
                    self.spec,
                    step.revision,
                    self.runners,
                    (self.old_revision, self.old_servers),
                    decision,
                    is_rollback=self.is_rollback,
                )
            case Commit():
                await tb.commit_stable(step.revision, self.spec, self.runners)
                tb.end_gating()
                for runner in self.runners.values():
                    runner.start_steady()
            case MarkStable():
                await tb.mark_stable(step.revision)
            case RemoveServers():
                for runner in self.old_servers.values():
                    await runner.remove()
                    await tb.emit(
                        ev.CONTAINER_REMOVED,
                        server=runner.name,
                        revision=runner.revision,
                        reason=step.reason,
                        message=runner.container.id[:12],
                    )
            case ReportGate():
                await self._report(step.revision)
            case RemoveRevision():
                await self._remove_revision(step.revision, step.reason)
            case ClearTarget():
                await tb.clear_target(step.revision)
            case RestoreStopped():
                self.restored = await restore_stopped(tb, self.old_servers, step.revision)
            case RotateServer():
                raise DtmaError("a rotation step has no place in a rollout")

    async def _report(self, revision: int) -> None:
        decision = self.decision
        assert decision is not None
        if decision.state is GateState.PASSED:
            await self.tb.emit(
                self._kinds[1],
                revision=revision,
                reason=gate_reasons.GATE_PASSED,
                message=f"all {len(self.runners)} servers healthy for "
                f"{self.spec.rollout.min_healthy_time:g}s",
            )
            return
        await self.tb.emit(
            self._kinds[2],
            server=decision.server,
            revision=revision,
            reason=decision.reason,
            message=decision.detail,
        )

    async def _remove_revision(self, revision: int, reason: str) -> None:
        """Remove every container of `revision` (tracked or not) but those that served before."""
        tb = self.tb
        for runner in self.runners.values():
            await runner.remove()
        kept = {r.container.id for r in self.old_servers.values()}
        for container in await tb.runtime.list_managed(tb.id):
            if container.revision == revision and container.id not in kept:
                await tb.remove_container(container)
        tb.end_gating()
        await tb.emit(
            ev.CONTAINER_REMOVED,
            revision=revision,
            reason=reason,
            message=f"removed the containers of revision {revision}",
        )
