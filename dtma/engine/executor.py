"""The one executor: runs the steps of domain/rollout_plan.py through the toolbox runner's ports,
and holds the one "start, then gate" path (`start_and_gate`) that rollouts, the stop_first
revert, secret rotation and recovery's interrupted rollout all use.

Every function here runs under the toolbox's lock (tb.lock), inside an operation or recovery.
State changes go through ToolboxRunner's methods (commit_revision, begin_gating, ...).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import structlog

from dtma.domain import gate as gate_reasons
from dtma.domain.containers import ObservedContainer
from dtma.domain.gate import Decision, GateState, GateTracker
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
from dtma.engine.admission import Slot
from dtma.engine.gating import hold_gate, new_tracker, start_probing, stop_probing
from dtma.engine.server_runner import ServerRunner
from dtma.engine.tool_contracts import check_tool_contracts
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.errors import DtmaError, EngineOutage, SecretsError
from dtma.spec.models import ServerSpec, ToolboxSpec

EXIT_LOG_LINES = 3

log = structlog.get_logger(__name__)


async def start_container(
    tb: ToolboxRunner, server: ServerSpec, revision: int, spec: ToolboxSpec, slot: Slot | None
) -> ObservedContainer:
    """Pull the image if needed, then create and start (secrets read now). With `slot` None an
    admission slot is held for the create only; a given slot stays with the caller (it goes
    back on the server's first probe answer). Raises DtmaError; leaves nothing behind."""
    if slot is None:
        async with tb.admission.hold():
            await tb.runtime.ensure_image(server.image)
            return await tb.create_container(server, revision, spec)
    await tb.runtime.ensure_image(server.image)
    return await tb.create_container(server, revision, spec)


async def start_and_gate(
    tb: ToolboxRunner,
    spec: ToolboxSpec,
    revision: int,
    *,
    only: Sequence[str] | None = None,
    running: Mapping[str, ObservedContainer] | None = None,
    adopt: bool = False,
    abort: Callable[[], int | None] | None = None,
    restarts: Mapping[str, int] | None = None,
    announce: bool = True,
) -> tuple[Decision, dict[str, ServerRunner]]:
    """Start every server of `revision` (or those in `only`) and hold the group gate over them.

    `running` containers are not created: with `adopt` they keep their session (an adopted
    process, announced as adopted); without it they are gated as fresh processes (restarted
    ones: a new initialize). Each server's healthy_deadline counts from its own start. `abort`
    names a newer revision that supersedes this one (the gate then fails at once). `restarts`
    gives new runners their restart count. Gating runners are visible through tb.gate_runners
    until the verdict; on an exception they are halted (not removed) and it propagates."""
    names = [s.name for s in spec.servers if only is None or s.name in only]
    epoch = tb.engine.epoch
    tracker = new_tracker(tb, spec, only, from_each_start=True)
    runners: dict[str, ServerRunner] = {}
    probes: list[asyncio.Task[None]] = []
    running = running or {}
    tb.begin_gating(runners)

    async def start_one(name: str) -> None:
        server = spec.server(name)
        slot: Slot | None = None
        container = running.get(name)
        if container is None:
            slot = await tb.admission.acquire()
            try:
                container = await start_container(tb, server, revision, spec, slot)
            except DtmaError as exc:
                slot.release()
                await _start_failed(tb, tracker, name, revision, exc)
                return
            except Exception as exc:  # e.g. OSError writing secret files: a failed start too
                slot.release()
                log.exception("server_start_crashed", server=name)
                await _start_failed(tb, tracker, name, revision, _internal(exc))
                return
            except BaseException:
                slot.release()
                raise
        created = name not in running
        tracker.server_started(name, tb.clock())
        runner = tb.new_runner(
            server,
            revision,
            container,
            fresh=created or not adopt,
            spec=spec,
            restarts=(restarts or {}).get(name, 0),
        )
        runners[name] = runner
        # Probe at once: the slot goes back on the first answer, not when all servers started.
        probes.append(start_probing(tb, runner, tracker, slot))
        if created and announce:
            await tb.emit(
                ev.SERVER_STARTED,
                server=name,
                revision=revision,
                message=f"container {container.id[:12]}",
            )
        elif not created and adopt:
            await tb.emit(
                ev.CONTAINER_ADOPTED,
                server=name,
                revision=revision,
                message=f"container {container.id[:12]}",
            )

    try:
        await asyncio.gather(*(start_one(name) for name in names))
        decision = tracker.decide(tb.clock())
        if decision.state is GateState.PENDING:
            decision = await hold_gate(tb, runners, tracker, abort, probes)
        if decision.state is GateState.FAILED and not await tb.engine.confirm(epoch):
            # The engine went away or restarted under the gate: not this revision's failure.
            raise EngineOutage(
                f"the Docker engine went away during the gate of revision {revision} "
                f"({decision.server or 'toolbox'}: {decision.reason})"
            )
        if decision.state is GateState.FAILED and decision.reason == gate_reasons.CONTAINER_EXITED:
            decision = await _with_exit_logs(tb, runners, decision)
        return decision, runners
    except Exception:
        for runner in runners.values():
            await runner.halt()
        raise
    finally:
        await stop_probing(probes)
        tb.end_gating()


def _internal(exc: Exception) -> DtmaError:
    """An unexpected exception as a start failure; the type only (its text may hold values)."""
    return DtmaError(f"internal error: {type(exc).__name__}")


async def _start_failed(
    tb: ToolboxRunner, tracker: GateTracker, server: str, revision: int, exc: DtmaError
) -> None:
    """A server could not start. Without its secrets it fails closed: no container at all."""
    secrets = isinstance(exc, SecretsError)
    if secrets:
        tracker.secrets_failed(server, exc.message)
    else:
        tracker.start_failed(server, exc.message)
    reason = gate_reasons.SECRETS_FAILED if secrets else gate_reasons.START_FAILED
    await tb.emit(
        ev.SERVER_START_FAILED, server=server, revision=revision, reason=reason, message=exc.message
    )


async def _with_exit_logs(
    tb: ToolboxRunner, runners: dict[str, ServerRunner], decision: Decision
) -> Decision:
    runner = runners.get(decision.server or "")
    if runner is None:
        return decision
    tail = (await tb.runtime.logs(runner.container.id, EXIT_LOG_LINES)).strip()
    if not tail:
        return decision
    tail = tb.journal.redact(" | ".join(line.strip() for line in tail.splitlines()), 300, tail=True)
    return Decision(
        decision.state, decision.reason, decision.server, f"{decision.detail}; last output: {tail}"
    )


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
        await tb.set_phase("healthy")
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
                await tb.repo.update_toolbox(tb.id, target_revision=step.revision)
                await tb.set_phase("deploying")
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
                tb.commit_revision(step.revision, self.spec, self.runners, stopped=False)
                tb.end_gating()
                for runner in self.runners.values():
                    runner.start_steady()
                await tb.repo.mark_stable(tb.id, step.revision)
                await tb.repo.update_toolbox(tb.id, stopped=0)
            case MarkStable():
                await tb.repo.mark_stable(tb.id, step.revision)
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
                await tb.repo.clear_target(tb.id, step.revision)
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
