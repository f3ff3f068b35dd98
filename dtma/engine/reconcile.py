"""The one reconcile executor: it acts on the steps of domain/planner.plan, for the agent's
start-up recovery (engine/recovery.py) and for the engine's return (engine/engine_return.py),
which differ only in the planner's inputs and in how a restart is run:

- at start (`at_once`), a restart happens now, awaited, through the image pull and admission,
  and an error fails the recovery (engine/recovery.py decides what that means);
- on the engine's return, the new runner restarts its container itself (its own restart path,
  waiting for Vault, under its budget if it cannot start), and the pass never fails for it.

Both go through the one restart write-ahead (ServerRestarts.replace). Runs under tb.lock.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

import structlog

from dtma.domain.containers import NO_CONTAINER_ID, ObservedContainer
from dtma.domain.planner import Held, Inputs, Step, plan
from dtma.domain.records import RestartState
from dtma.domain.restart import RestartTracker, from_wall
from dtma.engine import event_kinds as ev
from dtma.engine.server_runner import ServerRunner
from dtma.engine.start_gate import start_container
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.errors import DockerUnavailable, DtmaError
from dtma.spec.models import ToolboxSpec

RECOVERED = "recovered"
GAVE_UP = "restarts_exhausted: the budget was spent before the agent restarted"

log = structlog.get_logger(__name__)


async def saved_restarts(tb: ToolboxRunner, revision: int) -> dict[str, RestartState]:
    """The servers' restart states saved for `revision` (by this agent or the one before)."""
    states = await tb.repo.restart_states(tb.id)
    return {name: st for name, st in states.items() if st.revision == revision}


async def reconcile(
    tb: ToolboxRunner,
    spec: ToolboxSpec | None,
    inputs: Inputs,
    saved: dict[str, RestartState],
    *,
    epoch: int,
    at_once: bool,
) -> Counter[str]:
    """Plan from `inputs` and execute, step by step. Returns how many steps of each action
    ran. Raises DockerUnavailable if the engine goes away (the caller waits and runs the pass
    again); with `at_once`, any DtmaError of a restart."""
    counts: Counter[str] = Counter()
    for step in plan(inputs):
        counts[step.action] += 1
        if step.action == "remove":
            await _remove(tb, step, inputs.observed)
            continue
        assert spec is not None
        await _serve(tb, spec, step, inputs, saved, epoch, at_once)
    return counts


async def reconcile_at_start(
    tb: ToolboxRunner,
    revision: int | None,
    observed: list[ObservedContainer],
    engine_stopped: set[str] | frozenset[str],
    epoch: int,
) -> None:
    """The pass with the agent start's inputs (recovery, after its rollout decision; caller
    holds tb.lock): nothing is held but what a finished rollout kept, the saved restart
    states speak for the servers, and every exit is charged (crashes while the agent was
    away) but for the containers in `engine_stopped` (running when the engine went away
    during this recovery)."""
    rev = await tb.repo.revision(tb.id, revision) if revision is not None else None
    spec = ToolboxSpec.model_validate_json(rev.spec) if rev else None
    if spec is None or revision is None:
        await reconcile(tb, None, Inputs(observed, None, []), {}, epoch=epoch, at_once=True)
        return
    tb.commit_revision(revision, spec, tb.servers, stopped=tb.stopped)
    saved = await saved_restarts(tb, revision)
    now, wall = tb.clock(), time.time()

    def spent(name: str) -> bool:
        tracker = RestartTracker(spec.restart)
        tracker.restore(from_wall(saved[name].attempts, now, wall) if name in saved else ())
        return tracker.spent(now)

    names = [s.name for s in spec.servers]
    inputs = Inputs(
        observed,
        revision,
        names,
        held={n: Held(r.container.id, r.state, True) for n, r in tb.servers.items()},
        stopped=tb.stopped,
        gave_up=frozenset(n for n, st in saved.items() if st.gave_up and not st.pending),
        pending=frozenset(n for n, st in saved.items() if st.pending),
        spent=frozenset(n for n in names if spent(n)),
        charge_exits=True,
        engine_stopped=frozenset(engine_stopped),
    )
    await reconcile(tb, spec, inputs, saved, epoch=epoch, at_once=True)


async def _serve(
    tb: ToolboxRunner,
    spec: ToolboxSpec,
    step: Step,
    inputs: Inputs,
    saved: dict[str, RestartState],
    epoch: int,
    at_once: bool,
) -> None:
    """One server's step: a runner kept, made for what is found, or restarted."""
    revision, name = inputs.revision, step.server
    assert revision is not None
    assert name is not None
    old = tb.servers.get(name)
    if step.action == "keep":
        assert old is not None
        old.rebase(epoch)
        if not old.supervised:
            old.start_steady()  # kept from a rollout that recovery finished
        return
    if step.action == "leave" and name in inputs.held:
        return  # stopped or failed, as its runner is
    by_id = {c.id: c for c in inputs.observed}
    container = by_id.get(step.container_id or "") or (old.container if old else None)
    restarts, history = _budget_of(tb, old, saved.get(name))
    new = tb.new_runner(
        spec.server(name),
        revision,
        container or _no_container(tb.id, name, revision),
        fresh=step.action == "restart",
        spec=spec,
        restarts=restarts,
        history=history,
    )
    tb.replace_server(new)
    if old is not None:
        await old.halt()
    if step.action == "leave":
        new.mark_given_up(GAVE_UP)  # kept failed, its container (if any) left as it is
        # Saved at once: a pass run again (the engine went away) or the next agent start then
        # finds it given up, however its exit is read or its window has aged.
        await new.save_restarts()
    elif step.action == "restart" and at_once:
        await new.restart_now(
            RECOVERED,
            charged=step.charged,
            create=lambda: start_container(tb, new.spec, revision, spec, None),
        )
        new.start_steady()
    elif step.action == "restart":
        new.start_steady(restart_first=True)  # charging nothing: the engine stopped it
    else:
        if step.action == "adopt_stopped":
            new.mark_stopped()
        else:
            new.start_steady()
        if name in inputs.pending:
            await new.save_restarts()  # the restart it was counted for did happen: settled
        await tb.emit(
            ev.CONTAINER_ADOPTED,
            server=name,
            revision=revision,
            message=f"container {new.container.id[:12]}"
            + ("" if at_once else ", re-attached after the engine's return"),
        )


async def _remove(tb: ToolboxRunner, step: Step, observed: Sequence[ObservedContainer]) -> None:
    """Remove a container no server wants. One that cannot be removed now is not this pass's
    to fail for (the reaper tries again); an engine gone away is."""
    container = next(c for c in observed if c.id == step.container_id)
    try:
        await tb.remove_container(container)
    except DockerUnavailable:
        raise
    except DtmaError as exc:
        log.warning("reconcile_could_not_remove", container=container.id[:12], error=exc.message)
        return
    await tb.emit(
        ev.CONTAINER_REMOVED,
        server=step.server,
        reason=step.reason,
        revision=container.revision,
        message=f"container {container.id[:12]}",
    )


def _budget_of(
    tb: ToolboxRunner, old: ServerRunner | None, saved: RestartState | None
) -> tuple[int, tuple[float, ...]]:
    """The restart count and window a new runner carries on: its runner's, else the saved."""
    if old is not None:
        return old.restarts, old.restart_history
    if saved is not None:
        return saved.restarts, tuple(from_wall(saved.attempts, tb.clock(), time.time()))
    return 0, ()


def _no_container(toolbox: str, server: str, revision: int) -> ObservedContainer:
    """What a server without a container holds: an id the engine knows nothing of, as a runner
    whose last container was removed holds that container's (the watcher's inspect finds
    nothing; stop and remove treat it as gone)."""
    return ObservedContainer(
        id=NO_CONTAINER_ID,
        name=f"dtma-{toolbox}-{server}-r{revision}-none",
        toolbox=toolbox,
        server=server,
        revision=revision,
        spec_hash="",
        state="exited",
        exit_code=None,
        ip=None,
        host_port=None,
        started_at="",
    )
