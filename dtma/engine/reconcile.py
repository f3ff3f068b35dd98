"""The pass recovery runs on agent start (`reconcile_serving`): leave exactly one supervised
container per server of the serving revision, charging the crashes that happened while the agent
was away to the servers' restart budgets. The pass on the engine's return, which charges
nothing, is engine/engine_return.py.

The pure planner (domain/planner.plan_serving) says what to do; this module does it. It runs
under the toolbox's lock (tb.lock).
"""

from __future__ import annotations

import time

from dtma.domain.containers import NO_CONTAINER_ID, ObservedContainer
from dtma.domain.planner import EXITED, plan_serving
from dtma.domain.records import RestartState
from dtma.domain.restart import RestartTracker, Verdict, from_wall
from dtma.engine import event_kinds as ev
from dtma.engine.start_gate import start_container
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.spec.models import ToolboxSpec

RECOVERED = "recovered"


async def reconcile_serving(
    tb: ToolboxRunner,
    revision: int | None,
    observed: list[ObservedContainer],
    engine_stopped: set[str] | frozenset[str] = frozenset(),
) -> dict[str, int]:
    """On agent start (recovery): leave exactly one supervised container per server of
    `revision`, charging exits (crashes while the agent was away) to each restart budget, but
    for the containers in `engine_stopped` (running when the engine went away during this
    recovery: the engine stopped them). Returns how many containers were adopted, recreated
    and removed. Raises DtmaError."""
    counts = {"adopted": 0, "recreated": 0, "removed": 0}
    spec = None
    if revision is not None:
        rev = await tb.repo.revision(tb.id, revision)
        spec = ToolboxSpec.model_validate_json(rev.spec) if rev else None
    if spec is not None and revision is not None:
        tb.commit_revision(revision, spec, tb.servers, stopped=tb.stopped)
    servers = [s.name for s in spec.servers] if spec else []
    by_id = {c.id: c for c in observed}
    adopted = tb.known_container_ids()
    saved = {
        name: st
        for name, st in (await tb.repo.restart_states(tb.id)).items()
        if st.revision == revision
    }
    budgets: dict[str, RestartTracker] = {}
    given_up: set[str] = set()
    uncharged: set[str] = set()  # servers whose exit was the engine's doing
    for step in plan_serving(observed, revision if spec else None, servers, stopped=tb.stopped):
        if step.action == "remove" and step.reason == EXITED and spec is not None:
            assert step.server is not None
            assert step.container_id is not None
            assert revision is not None
            budget = budgets[step.server] = _budget(tb, spec, step.server, saved)
            if step.container_id in engine_stopped:
                uncharged.add(step.server)
            else:
                last = saved.get(step.server, RestartState(revision, 0))
                if last.pending:
                    pass  # the crash was counted before the agent died; the recreate ends it
                elif last.gave_up or (budget.on_failure(tb.clock()).verdict is Verdict.GIVE_UP):
                    _adopt_failed(tb, spec, revision, by_id[step.container_id], last)
                    given_up.add(step.server)
                    continue
        if step.action == "remove":
            assert step.container_id is not None
            await tb.remove_container(by_id[step.container_id])
            counts["removed"] += 1
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
            if server.name in given_up:
                continue  # its restart budget is spent: kept as failed, not recreated
            before = saved.get(server.name)
            if before is not None and before.gave_up and not before.pending:
                # Gave up (restart mode `fail`) and its last container is gone too (a restart
                # removed it and then could not create one): failed it stays, not revived.
                gone = _no_container(tb.id, server.name, revision)
                _adopt_failed(tb, spec, revision, gone, before)
                continue
            tracker = budgets.get(server.name)
            if tracker is None:  # missing, not crashed: still counts as a restart
                tracker = _budget(tb, spec, server.name, saved)
                if not (before and before.pending):
                    tracker.on_failure(tb.clock())
            charged = server.name not in uncharged and not (before and before.pending)
            restarts = (before.restarts if before else 0) + (1 if charged else 0)
            # Write-ahead, as the server runner does: a kill -9 during the create keeps the count.
            await tb.save_restarts(server.name, revision, restarts, tracker.history(), False, True)
            fresh = await start_container(tb, server, revision, spec, None)
            runner = tb.new_runner(
                server,
                revision,
                fresh,
                fresh=True,
                spec=spec,
                restarts=restarts,
                history=tracker.history(),
            )
            tb.replace_server(runner)
            await runner.save_restarts()
            counts["recreated"] += 1
            await tb.emit(
                ev.SERVER_RESTARTED,
                server=server.name,
                revision=revision,
                reason=RECOVERED,
                message=f"container {fresh.id[:12]} replaces an {step.reason} one",
            )
            runner.start_steady()
            continue
        assert step.container_id is not None
        if step.container_id in adopted:
            continue  # the kept revision's runners already hold it
        kept = saved.get(server.name)
        runner = tb.new_runner(
            server,
            revision,
            by_id[step.container_id],
            fresh=False,
            spec=spec,
            restarts=kept.restarts if kept else 0,
            history=from_wall(kept.attempts, tb.clock(), time.time()) if kept else (),
        )
        if step.action == "adopt_stopped":
            runner.mark_stopped()
        tb.replace_server(runner)
        if kept is not None and kept.pending:
            await runner.save_restarts()  # the restart it was counted for did happen: settled
        counts["adopted"] += 1
        await tb.emit(
            ev.CONTAINER_ADOPTED,
            server=server.name,
            revision=revision,
            message=f"container {step.container_id[:12]}",
        )
    for runner in tb.servers.values():
        if runner.state != "stopped":
            runner.start_steady()
    return counts


def _budget(
    tb: ToolboxRunner, spec: ToolboxSpec, server: str, saved: dict[str, RestartState]
) -> RestartTracker:
    """The server's restart tracker as the previous agent process left it."""
    tracker = RestartTracker(spec.restart, tb.rng)
    old = saved.get(server)
    if old is not None:
        tracker.restore(from_wall(old.attempts, tb.clock(), time.time()))
    return tracker


def _adopt_failed(
    tb: ToolboxRunner,
    spec: ToolboxSpec,
    revision: int,
    container: ObservedContainer,
    saved: RestartState,
) -> None:
    """Keep a crashed server whose restart budget is spent as `failed` (not recreated)."""
    runner = tb.new_runner(
        spec.server(container.server),
        revision,
        container,
        fresh=False,
        spec=spec,
        restarts=saved.restarts,
        history=from_wall(saved.attempts, tb.clock(), time.time()),
    )
    runner.mark_given_up("restarts_exhausted: the budget was spent before the agent restarted")
    tb.replace_server(runner)


def _no_container(toolbox: str, server: str, revision: int) -> ObservedContainer:
    """What a given-up server without a container holds: an id the engine knows nothing of, as
    a runner whose last container was removed holds that container's (the watcher's inspect
    finds nothing; stop and remove treat it as gone)."""
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
