"""Rollouts: deploy a revision, hold the group gate, then keep it or revert (DESIGN.md).

start_first: the new revision starts beside the old one; the old one is removed only after the
gate passes, and on failure the new containers are removed, so the old one never stopped serving.
stop_first: the old revision is stopped first; on failure it is started again and gated.
A rollback (explicit, or the stop_first revert) is never itself rolled back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from dtma.domain import gate as gate_reasons
from dtma.domain.containers import ObservedContainer
from dtma.domain.gate import Decision, GateState, GateTracker
from dtma.engine import event_kinds as ev
from dtma.engine.admission import Slot
from dtma.engine.gating import hold_gate, new_tracker, start_probing, stop_probing
from dtma.engine.server_runner import ServerRunner
from dtma.engine.tool_contracts import check_tool_contracts
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.errors import DtmaError, SecretsError
from dtma.spec.models import ToolboxSpec

EXIT_LOG_LINES = 3

SUCCEEDED, ROLLED_BACK, FAILED = "succeeded", "rolled_back", "failed"

log = structlog.get_logger(__name__)


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
    record = await tb.repo.revision(tb.id, to_rev)
    if record is None:
        raise DtmaError(f"revision {to_rev} does not exist")
    spec = ToolboxSpec.model_validate_json(record.spec)
    old_servers, old_rev = dict(tb.servers), tb.revision
    try:
        return await _roll(tb, spec, to_rev, old_servers, old_rev, is_rollback=is_rollback)
    except Exception:
        await _clean_up_crashed(tb, to_rev, old_servers, old_rev, spec)
        raise


async def _roll(
    tb: ToolboxRunner,
    spec: ToolboxSpec,
    to_rev: int,
    old_servers: dict[str, ServerRunner],
    old_rev: int | None,
    *,
    is_rollback: bool,
) -> tuple[str, str | None]:
    started, passed, failed = (
        (ev.ROLLBACK_STARTED, ev.ROLLBACK_PASSED, ev.ROLLBACK_FAILED)
        if is_rollback
        else (ev.ROLLOUT_STARTED, ev.ROLLOUT_PASSED, ev.ROLLOUT_FAILED)
    )
    await tb.repo.update_toolbox(tb.id, target_revision=to_rev)
    await tb.set_phase("deploying")
    await tb.emit(
        started,
        revision=to_rev,
        reason=spec.rollout.order,
        message=f"from revision {old_rev} to {to_rev} ({len(spec.servers)} servers)",
    )

    stopped_old = False
    if spec.rollout.order == "stop_first" and old_servers:
        for runner in old_servers.values():
            await tb.stop_server(runner, reason="stop_first")
        stopped_old = True

    abort = None if is_rollback else (lambda: tb.superseding(to_rev))
    decision, new_runners = await deploy_and_gate(tb, spec, to_rev, abort=abort)
    decision = await check_tool_contracts(  # strict: a broken tool contract fails the gate
        tb, spec, to_rev, new_runners, (old_rev, old_servers), decision, is_rollback=is_rollback
    )
    if decision.state is GateState.PASSED:
        # Commit first: from here on a crash must keep the new revision, not remove it.
        tb.servers, tb.spec, tb.revision, tb.stopped = new_runners, spec, to_rev, False
        for runner in new_runners.values():
            runner.start_steady()
        await tb.repo.mark_stable(tb.id, to_rev)
        await tb.repo.update_toolbox(tb.id, stopped=0)
        await _remove_superseded(tb, old_servers)
        await tb.emit(
            passed,
            revision=to_rev,
            reason=gate_reasons.GATE_PASSED,
            message=f"all {len(new_runners)} servers healthy for "
            f"{spec.rollout.min_healthy_time:g}s",
        )
        await tb.set_phase("healthy")
        return SUCCEEDED, None

    failure = f"{decision.server or 'toolbox'}: {decision.reason}: {decision.detail}"
    await tb.emit(
        failed,
        server=decision.server,
        revision=to_rev,
        reason=decision.reason,
        message=decision.detail,
    )
    await _remove_revision(tb, to_rev, new_runners)
    await tb.repo.clear_target(tb.id, to_rev)

    if stopped_old and old_rev is not None:
        restored = await _restart_stopped(tb, old_servers, old_rev)
        if not restored:
            await tb.set_phase("failed")
            return FAILED, f"{failure}; restarting revision {old_rev} failed too"
    if not old_servers:
        if decision.reason != gate_reasons.SUPERSEDED:  # else the newer revision deploys next
            await tb.set_phase("failed")
        return FAILED, failure
    if is_rollback or not spec.rollout.auto_revert or decision.reason == gate_reasons.SUPERSEDED:
        return FAILED, failure
    return ROLLED_BACK, failure


async def _remove_superseded(tb: ToolboxRunner, old_servers: dict[str, ServerRunner]) -> None:
    for runner in old_servers.values():
        await runner.remove()
        await tb.emit(
            ev.CONTAINER_REMOVED,
            server=runner.name,
            revision=runner.revision,
            reason="superseded",
            message=runner.container.id[:12],
        )


async def _clean_up_crashed(
    tb: ToolboxRunner,
    to_rev: int,
    old_servers: dict[str, ServerRunner],
    old_rev: int | None,
    spec: ToolboxSpec,
) -> None:
    """After an unexpected exception: remove every container of `to_rev` (tracked or not),
    clear the target, and start a stop_first revision again. Each step is tried; failures are
    logged, and the caller re-raises the original exception. Once the gate has passed (the
    revision is committed), the new revision stays and the old one goes instead."""
    if tb.revision == to_rev and old_rev != to_rev:
        try:
            await tb.repo.mark_stable(tb.id, to_rev)
            await _remove_superseded(tb, old_servers)
        except Exception:
            log.exception("rollout_cleanup_failed", step="finish_committed", revision=to_rev)
        return
    try:
        await _remove_revision(tb, to_rev, {})
    except Exception:
        log.exception("rollout_cleanup_failed", step="remove_new_revision", revision=to_rev)
    try:
        await tb.repo.clear_target(tb.id, to_rev)
    except Exception:
        log.exception("rollout_cleanup_failed", step="clear_target", revision=to_rev)
    stopped = [r for r in old_servers.values() if r.state == "stopped"]
    if spec.rollout.order == "stop_first" and stopped and old_rev is not None and not tb.stopped:
        try:
            await _restart_stopped(tb, old_servers, old_rev)
        except Exception:
            log.exception("rollout_cleanup_failed", step="restart_old_revision", revision=old_rev)


async def deploy_and_gate(
    tb: ToolboxRunner,
    spec: ToolboxSpec,
    revision: int,
    adopt: dict[str, ObservedContainer] | None = None,
    abort: Callable[[], int | None] | None = None,
) -> tuple[Decision, dict[str, ServerRunner]]:
    """Start (or adopt) every server of `revision` and hold the group gate over them. `abort`
    names a newer revision that supersedes this one (the gate then fails at once)."""
    tracker = new_tracker(tb, spec, from_each_start=True)
    runners: dict[str, ServerRunner] = {}
    probes: list[asyncio.Task[None]] = []
    tb.gate_runners = runners

    async def start_one(server_name: str) -> None:
        server = spec.server(server_name)
        slot: Slot | None = None
        if adopt and server_name in adopt:
            container, fresh = adopt[server_name], False  # running already: no admission
        else:
            slot = await tb.admission.acquire()
            try:
                await tb.runtime.ensure_image(server.image)
                container = await tb.create_container(server, revision, spec)
            except DtmaError as exc:
                slot.release()
                await _start_failed(tb, tracker, server_name, revision, exc)
                return
            except Exception as exc:  # e.g. OSError writing secret files: a failed start too
                slot.release()
                log.exception("server_start_crashed", server=server_name)
                await _start_failed(tb, tracker, server_name, revision, _internal(exc))
                return
            except BaseException:
                slot.release()
                raise
            fresh = True
        tracker.server_started(server_name, tb.clock())
        runner = tb.new_runner(server, revision, container, fresh=fresh, spec=spec)
        runners[server_name] = runner
        # Probe at once: the slot goes back on the first answer, not when all servers started.
        probes.append(start_probing(tb, runner, tracker, slot))
        await tb.emit(
            ev.SERVER_STARTED if fresh else ev.CONTAINER_ADOPTED,
            server=server_name,
            revision=revision,
            message=f"container {container.id[:12]}",
        )

    try:
        await asyncio.gather(*(start_one(s.name) for s in spec.servers))
        decision = tracker.decide(tb.clock())
        if decision.state is GateState.PENDING:
            decision = await hold_gate(tb, runners, tracker, abort, probes)
        if decision.state is GateState.FAILED and decision.reason == gate_reasons.CONTAINER_EXITED:
            decision = await _with_exit_logs(tb, runners, decision)
        return decision, runners
    except Exception:
        for runner in runners.values():
            await runner.halt()
        raise
    finally:
        await stop_probing(probes)
        tb.gate_runners = {}


def _internal(exc: Exception) -> DtmaError:
    """An unexpected exception as a start failure; the type only (its text may hold values)."""
    return DtmaError(f"internal error: {type(exc).__name__}")


async def _start_failed(
    tb: ToolboxRunner, tracker: GateTracker, server: str, revision: int, exc: DtmaError
) -> None:
    """A server could not start. Without its secrets it fails closed: no container at all."""
    reason = (
        gate_reasons.SECRETS_FAILED if isinstance(exc, SecretsError) else gate_reasons.START_FAILED
    )
    if isinstance(exc, SecretsError):
        tracker.secrets_failed(server, exc.message)
    else:
        tracker.start_failed(server, exc.message)
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


async def _remove_revision(
    tb: ToolboxRunner, revision: int, runners: dict[str, ServerRunner]
) -> None:
    """Remove every container of a failed revision, including any not tracked by a runner."""
    for runner in runners.values():
        await runner.remove()
    for container in await tb.runtime.list_managed(tb.id):
        if container.revision == revision:
            await tb.remove_container(container)
    await tb.emit(
        ev.CONTAINER_REMOVED,
        revision=revision,
        reason="rollout_failed",
        message=f"removed the containers of revision {revision}",
    )


async def _restart_stopped(
    tb: ToolboxRunner, servers: dict[str, ServerRunner], revision: int
) -> bool:
    """stop_first revert: start the old containers again (recreate any that are gone) and gate
    them. This is a rollback, so it is never rolled back itself."""
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
    # Restarted processes are new processes: their stdio sessions need a fresh initialize, so
    # they go through the gate as fresh containers; missing ones are recreated.
    decision, runners = await deploy_and_gate_fresh(tb, spec, revision, restarted)
    if decision.state is GateState.PASSED:
        tb.servers, tb.revision = runners, revision
        for runner in runners.values():
            runner.start_steady()
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
    tb.servers = runners
    for runner in runners.values():
        runner.start_steady()
    return False


async def deploy_and_gate_fresh(
    tb: ToolboxRunner, spec: ToolboxSpec, revision: int, running: dict[str, ObservedContainer]
) -> tuple[Decision, dict[str, ServerRunner]]:
    """Gate `running` containers as fresh processes (they get an initialize); start the rest."""
    tracker = new_tracker(tb, spec)
    runners: dict[str, ServerRunner] = {}
    tb.gate_runners = runners
    try:
        for server in spec.servers:
            container = running.get(server.name)
            if container is None:
                try:
                    async with tb.admission.hold():
                        container = await tb.create_container(server, revision, spec)
                except DtmaError as exc:
                    await _start_failed(tb, tracker, server.name, revision, exc)
                    continue
            runners[server.name] = tb.new_runner(server, revision, container, fresh=True, spec=spec)
        decision = tracker.decide(tb.clock())
        if decision.state is GateState.PENDING:
            decision = await hold_gate(tb, runners, tracker)
        return decision, runners
    finally:
        tb.gate_runners = {}
