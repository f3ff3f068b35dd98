"""The one "start, then gate" path: rollouts, the stop_first revert, secret rotation and
recovery's interrupted rollout all start their servers and hold the group gate here.

Every function here runs under the toolbox's lock (tb.lock), inside an operation or recovery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import structlog

from dtma.domain import gate as gate_reasons
from dtma.domain.containers import ObservedContainer
from dtma.domain.gate import Decision, GateState, GateTracker
from dtma.engine import event_kinds as ev
from dtma.engine.admission import Slot
from dtma.engine.gating import hold_gate, new_tracker, start_probing, stop_probing
from dtma.engine.server_runner import ServerRunner
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
