"""ToolboxState: a toolbox's state and the one writer of it (issue 19, "one writer").

What it serves (servers, spec, revision, stopped), what is under a gate, the newest applied
revision, the phase, and the toolbox's row in the state DB (serving, stable and in-flight
revision, stopped, phase, tools, restart budgets) are assigned only by the methods here; every
transition that is also in the state DB changes memory and the DB together.
`tests/unit/test_one_writer.py` fails on a write of the row from any other module.

ToolboxRunner (engine/toolbox_runner.py) is built on it and adds containers and operations;
engine/executor.py, rollout.py, rotation.py, reconcile.py and server_ops.py call these
transitions, never the store.

The phase is derived (domain/phase.derive_phase) from the servers, the stopped flag, the running
operation's activity and how the last one ended; nobody pushes it. After a change of an input the
phase is recomputed and, if it changed, written here and only here (`sync_phase`: memory, the DB
and the event together): awaited after an activity begins or ends, scheduled as one supervised
write after a change of the servers or the stopped flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

from dtma.domain.phase import Activity, Ended, PhaseInputs, ServerView, derive_phase
from dtma.domain.records import RestartState
from dtma.domain.restart import to_wall
from dtma.engine import event_kinds as ev
from dtma.engine.journal import Journal
from dtma.engine.server_runner import ServerRunner
from dtma.engine.supervisor import Supervisor
from dtma.ports import ToolboxStore
from dtma.spec.models import ToolboxSpec


class ToolboxState:
    def __init__(
        self,
        toolbox_id: str,
        *,
        repo: ToolboxStore,
        journal: Journal,
        supervisor: Supervisor,
        clock: Callable[[], float],
    ) -> None:
        self.id = toolbox_id
        self.repo = repo
        self.journal = journal
        self.supervisor = supervisor
        self.clock = clock
        self.servers: dict[str, ServerRunner] = {}
        self.gate_runners: dict[str, ServerRunner] = {}
        self.spec: ToolboxSpec | None = None
        self.revision: int | None = None
        self.stopped = False
        self.busy_with: str | None = None
        # The newest applied revision: last write wins over older applies (rollbacks queue).
        self.wanted_revision: int | None = None
        # The phase's other inputs (domain/phase.py): the running operation's activity, how the
        # last operation ended (and its error), and whether the toolbox is gone.
        self.activity: Activity | None = None
        self.ended = Ended.NOTHING
        self.ended_error = ""
        self.gone = False
        self.phase = derive_phase(self.phase_inputs())[0]
        self._phase_task: asyncio.Task[None] | None = None
        self._phase_lock = asyncio.Lock()
        self._servers_moved = asyncio.Event()  # set by server_changed (first_answers)

    # -- in memory: what the toolbox serves ---------------------------------------------------

    def commit_revision(
        self,
        revision: int,
        spec: ToolboxSpec,
        servers: dict[str, ServerRunner],
        *,
        stopped: bool,
    ) -> None:
        """Serve `revision`: its runners, spec, number and stopped flag change together (the
        MCP endpoint reads `servers` live, so this is the switch). Supervision is the caller's."""
        self.servers, self.spec, self.revision, self.stopped = (
            dict(servers),
            spec,
            revision,
            stopped,
        )
        self._schedule_phase()

    def replace_server(self, runner: ServerRunner) -> None:
        """`runner` serves its server from now on (a restart, rotation or recovery)."""
        self.servers[runner.name] = runner
        self._schedule_phase()

    def drop_servers(self) -> None:
        """Let go of every serving runner (halted by the caller; their containers stay): a
        recovery that the engine interrupted starts over from the engine's listing."""
        self.servers = {}
        self._schedule_phase()

    def mark_stopped(self, stopped: bool) -> None:
        self.stopped = stopped
        self._schedule_phase()

    def begin_gating(self, runners: dict[str, ServerRunner]) -> None:
        """`runners` (filled as their containers start) are under a gate: the watcher's exits
        reach them and the reaper knows their containers. One gate at a time (tb.lock)."""
        self.gate_runners = runners

    def end_gating(self) -> None:
        self.gate_runners = {}

    def want_revision(self, revision: int) -> None:
        """`revision` is the newest applied one: last write wins over older applies."""
        self.wanted_revision = revision

    def superseding(self, revision: int) -> int | None:
        """The newer revision that replaces `revision` (last write wins), if there is one."""
        wanted = self.wanted_revision
        return wanted if wanted is not None and wanted != revision else None

    # -- transitions of the toolbox's row: the only writes of it (memory and the state DB) ----

    async def announce(self, revision: int) -> None:
        """`revision` is rolling out: recovery finishes or reverts it after a crash."""
        await self.repo.update_toolbox(self.id, target_revision=revision)

    async def commit_stable(
        self, revision: int, spec: ToolboxSpec, servers: dict[str, ServerRunner]
    ) -> None:
        """The gate passed: serve `revision` (commit_revision), running, and record it as the
        serving, stable revision."""
        self.commit_revision(revision, spec, servers, stopped=False)
        await self.repo.mark_stable(self.id, revision)
        await self.repo.update_toolbox(self.id, stopped=0)

    async def mark_stable(self, revision: int) -> None:
        """`revision` passed its gate and serves (recovery kept it, or a rollout committed)."""
        await self.repo.mark_stable(self.id, revision)

    async def clear_target(self, revision: int) -> None:
        """`revision` is no longer rolling out (a newer apply keeps its own). Idempotent."""
        await self.repo.clear_target(self.id, revision)

    async def set_stopped(self, stopped: bool) -> None:
        """The toolbox is stopped (or no longer): memory and the state DB together."""
        self.mark_stopped(stopped)
        await self.repo.update_toolbox(self.id, stopped=int(stopped))

    async def record_tools(self, server: str, revision: int, tools: list[str]) -> None:
        await self.repo.set_tools(self.id, server, revision, tools)

    async def save_restarts(
        self,
        server: str,
        revision: int,
        restarts: int,
        history: Sequence[float],
        gave_up: bool,
        pending: bool = False,
    ) -> None:
        """Save a server's restart count and window (as wall-clock times). Idempotent."""
        attempts = tuple(to_wall(history, self.clock(), time.time()))
        await self.repo.save_restart_state(
            self.id, server, RestartState(revision, restarts, attempts, gave_up, pending)
        )

    async def forget(self) -> None:
        """The toolbox is gone (its containers removed): its row and everything under it."""
        self.servers.clear()
        self.gone = True  # its phase stays `deleting`; nothing is written for it any more
        await self.repo.delete_toolbox(self.id)
        await self.emit(ev.TOOLBOX_DELETED)

    async def emit(
        self,
        kind: str,
        *,
        server: str | None = None,
        revision: int | None = None,
        reason: str = "",
        message: str = "",
        operation: str | None = None,
    ) -> None:
        await self.journal.emit(
            kind,
            toolbox=self.id,
            server=server,
            revision=revision,
            operation=operation or self.busy_with,
            reason=reason,
            message=message,
        )

    # -- phase: derived (domain/phase.py), written only here --------------------------------

    def phase_inputs(self) -> PhaseInputs:
        return PhaseInputs(
            activity=self.activity,
            ended=self.ended,
            error=self.ended_error,
            stopped=self.stopped,
            servers=tuple(ServerView(r.state, r.health) for r in self.servers.values()),
            gone=self.gone,
        )

    async def begin(self, activity: Activity) -> None:
        """The running operation shows in the phase on its own from now: a rollout announced
        its revision, a delete began, or the start-up recovery runs."""
        self.activity = activity
        await self.sync_phase()

    async def end(self, ended: Ended, error: str = "") -> None:
        """The running operation (or its activity: a rollout's verdict) ended as `ended`."""
        self.activity, self.ended, self.ended_error = None, ended, error
        await self.sync_phase()

    def activity_over(self) -> None:
        """The running activity is over however it ended (an exception on its way out too):
        the phase follows its other inputs again."""
        if self.activity is not None:
            self.activity = None
            self._schedule_phase()

    async def servers_reconciled(self) -> None:
        """The pass on the engine's return brought every server in line: what a failed
        start-up recovery left no longer decides the phase, the servers do."""
        if self.ended is Ended.RECOVERY_FAILED:
            self.ended, self.ended_error = Ended.SUCCEEDED, ""
        await self.sync_phase()

    async def sync_phase(self) -> None:
        """Write the derived phase if it differs from the written one: the state DB, then
        memory, then the event (a failed write leaves both where they were and raises). One
        write at a time; an input that changes during a write is caught by the next round."""
        async with self._phase_lock:
            while True:
                phase, reason = derive_phase(self.phase_inputs())
                if phase == self.phase:
                    return
                await self.repo.update_toolbox(self.id, phase=phase)
                previous, self.phase = self.phase, phase
                await self.emit(
                    ev.TOOLBOX_PHASE,
                    revision=self.revision,
                    reason=reason,
                    message=f"{previous} -> {phase}",
                )

    def server_changed(self) -> None:
        self._servers_moved.set()
        self._schedule_phase()

    async def first_answers(self, within: float) -> None:
        """Wait, `within` seconds at most, until no running server awaits its first probe's
        answer (until then it does not count as serving: domain/phase.py)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while any(
                    r.state == "running" and r.health == "unknown" for r in self.servers.values()
                ):
                    self._servers_moved.clear()
                    await self._servers_moved.wait()

    def _schedule_phase(self) -> None:
        if derive_phase(self.phase_inputs())[0] == self.phase:
            return
        if self._phase_task is None or self._phase_task.done():
            # Supervised: a failed write is logged, counted and retried (with the phase as it
            # is by then), never lost in a task nobody awaits. One at a time: a change while
            # it runs is caught by its next round (sync_phase recomputes until it holds).
            self._phase_task = self.supervisor.spawn(
                f"phase {self.id}", "phase", self.sync_phase, forever=False
            )
