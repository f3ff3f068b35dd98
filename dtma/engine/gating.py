"""Holding a health gate over live runners: probe each one, feed the tracker, decide.

Used by start_gate.start_and_gate (rollouts, the stop_first revert, recovery, secret rotation).
Probe tasks run on the event loop; hold_gate cancels them when it returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from dtma.cancellation import cancel_and_wait
from dtma.domain import gate as gate_reasons
from dtma.domain.gate import Decision, GateState, GateTracker
from dtma.engine.admission import Slot
from dtma.engine.server_runner import ServerRunner
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.spec.models import ToolboxSpec

GATE_PROBE_INTERVAL = 0.25  # like Docker's start_interval: probe fast while the gate is open
GATE_TICK = 0.1


def new_tracker(
    tb: ToolboxRunner,
    spec: ToolboxSpec,
    only: Sequence[str] | None = None,
    *,
    from_each_start: bool = False,
) -> GateTracker:
    """A gate over every server of `spec`, or over the servers named in `only`. Deadlines
    count from now, or with `from_each_start` from each server's `server_started`."""
    servers = [s for s in spec.servers if only is None or s.name in only]
    return GateTracker(
        [s.name for s in servers],
        started_at=None if from_each_start else tb.clock(),
        min_healthy_time=spec.rollout.min_healthy_time,
        healthy_deadline=spec.rollout.healthy_deadline,
        failure_threshold={s.name: s.health.failure_threshold for s in servers},
    )


def start_probing(
    tb: ToolboxRunner, runner: ServerRunner, tracker: GateTracker, slot: Slot | None = None
) -> asyncio.Task[None]:
    """Probe `runner` for the gate until its container exits or the task is cancelled. `slot`
    (admission) goes back on the first healthy answer, the exit, or the server's deadline."""

    async def probe_loop() -> None:
        try:
            while not runner.exited:
                result = await runner.probe_once(full=True)
                tracker.probe(runner.name, result, tb.clock())
                if not result.healthy:
                    # The event stream may have reported the exit before this runner existed.
                    seen = await tb.runtime.inspect(runner.container.id)
                    if seen is None or not seen.running:
                        code = seen.exit_code if seen else None
                        runner.on_container_exit(runner.container.id, code)
                deadline = tracker.deadline(runner.name)
                if slot and (result.healthy or (deadline and tb.clock() >= deadline)):
                    slot.release()
                await asyncio.sleep(GATE_PROBE_INTERVAL)
        finally:
            if slot:
                slot.release()

    return asyncio.create_task(probe_loop(), name=f"gate-{runner.name}")


async def stop_probing(tasks: list[asyncio.Task[None]]) -> None:
    """End every probe task for good (a lost cancel is repeated: dtma/cancellation.py)."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        await cancel_and_wait(task)


async def hold_gate(
    tb: ToolboxRunner,
    runners: dict[str, ServerRunner],
    tracker: GateTracker,
    abort: Callable[[], int | None] | None = None,
    probing: list[asyncio.Task[None]] | None = None,
) -> Decision:
    """Decide the gate over `runners`, probed by `probing` (started here when None). The probe
    tasks are cancelled on return."""
    tasks = (
        probing
        if probing is not None
        else [start_probing(tb, r, tracker) for r in runners.values()]
    )
    try:
        while True:
            for task in tasks:  # a probe loop that crashed is not a silent stop of its probes
                if task.done() and (crash := task.exception()) is not None:
                    raise crash
            for runner in runners.values():
                if runner.exited:
                    tracker.container_exited(runner.name, runner.exit_code)
            decision = tracker.decide(tb.clock())
            if decision.state is not GateState.PENDING:
                return decision
            newer = abort() if abort is not None else None
            if newer is not None:
                return Decision(
                    GateState.FAILED, gate_reasons.SUPERSEDED, None, f"revision {newer} was applied"
                )
            await asyncio.sleep(GATE_TICK)
    finally:
        await stop_probing(tasks)
