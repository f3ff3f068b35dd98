"""ToolboxRunner: one per toolbox (Nomad's alloc runner, small). Owns the serving servers, runs
one operation at a time (an asyncio.Lock, FIFO, so later operations queue), and keeps the phase.

Its serving state (servers, spec, revision, stopped, gate_runners, wanted_revision) is assigned
only by its own methods (commit_revision, begin_gating/end_gating, replace_server, mark_stopped,
want_revision); engine/executor.py, rollout.py, rotation.py and recovery.py call them. Container
creation is in engine/container_factory.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog

from dtma.domain.containers import (
    ObservedContainer,
)
from dtma.domain.records import RestartState
from dtma.domain.restart import to_wall
from dtma.engine import event_kinds as ev
from dtma.engine.admission import Admission, default_max_starts
from dtma.engine.container_factory import ContainerFactory
from dtma.engine.journal import Journal
from dtma.engine.secrets import SecretInjector
from dtma.engine.server_runner import ServerRunner
from dtma.engine.supervisor import Supervisor
from dtma.errors import DtmaError
from dtma.ports import ContainerRuntime, EngineFaults, ProbeFactory, ToolboxStore
from dtma.spec.models import ServerSpec, ToolboxSpec

log = structlog.get_logger(__name__)


class ToolboxRunner:
    def __init__(
        self,
        toolbox_id: str,
        *,
        runtime: ContainerRuntime,
        repo: ToolboxStore,
        journal: Journal,
        probe_factory: ProbeFactory,
        clock: Callable[[], float],
        rng: random.Random | None = None,
        secrets: SecretInjector | None = None,
        supervisor: Supervisor,
        engine: EngineFaults,
        admission: Admission | None = None,
    ) -> None:
        self.id = toolbox_id
        # Shared by every toolbox of the agent: bounds the servers starting at once.
        self.admission = admission or Admission(default_max_starts())
        self.supervisor = supervisor
        # The engine's fault class (engine/engine_watch.py), and the engine epoch this toolbox's
        # runners were last reconciled in (engine/reconcile.py moves it).
        self.engine = engine
        self.reconciled_epoch = engine.epoch
        self.secrets = secrets
        self.runtime = runtime
        self.repo = repo
        self.journal = journal
        self.probe_factory = probe_factory
        self.clock = clock
        self.rng = rng or random.Random()
        self.lock = asyncio.Lock()
        self.servers: dict[str, ServerRunner] = {}
        self.gate_runners: dict[str, ServerRunner] = {}
        self.spec: ToolboxSpec | None = None
        self.revision: int | None = None
        self.phase = "deploying"
        self.stopped = False
        self.busy_with: str | None = None
        # The newest applied revision: last write wins over older applies (rollbacks queue).
        self.wanted_revision: int | None = None
        self._phase_task: asyncio.Task[None] | None = None
        self._containers = ContainerFactory(toolbox_id, runtime, secrets)

    # -- state: the only code that assigns the serving state ----------------------------------

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

    def replace_server(self, runner: ServerRunner) -> None:
        """`runner` serves its server from now on (a restart, rotation or recovery)."""
        self.servers[runner.name] = runner

    def mark_stopped(self, stopped: bool) -> None:
        self.stopped = stopped

    def begin_gating(self, runners: dict[str, ServerRunner]) -> None:
        """`runners` (filled as their containers start) are under a gate: the watcher's exits
        reach them and the reaper knows their containers. One gate at a time (tb.lock)."""
        self.gate_runners = runners

    def end_gating(self) -> None:
        self.gate_runners = {}

    def want_revision(self, revision: int) -> None:
        """`revision` is the newest applied one: last write wins over older applies."""
        self.wanted_revision = revision

    def new_runner(
        self,
        server: ServerSpec,
        revision: int,
        container: ObservedContainer,
        *,
        fresh: bool,
        spec: ToolboxSpec,
        restarts: int = 0,
        history: Sequence[float] = (),
    ) -> ServerRunner:
        return ServerRunner(
            self,
            server,
            revision,
            container,
            fresh=fresh,
            restart_policy=spec.restart,
            probe_factory=self.probe_factory,
            clock=self.clock,
            rng=self.rng,
            restarts=restarts,
            startup_deadline=spec.rollout.healthy_deadline,
            history=history,
            supervisor=self.supervisor,
            engine=self.engine,
        )

    # -- ServerHost ---------------------------------------------------------------------------

    async def create_container(
        self, server: ServerSpec, revision: int, spec: ToolboxSpec | None = None
    ) -> ObservedContainer:
        """Prestart (secrets, read now, never earlier), then create and start, for `spec` (the
        serving one by default). On any failure nothing is left behind. Raises SecretsError or
        DockerError."""
        group = spec or self.spec
        assert group is not None
        return await self._containers.create(server, revision, group)

    async def remove_container(self, container: ObservedContainer) -> None:
        """Remove a container and its secret files. Idempotent."""
        await self._containers.remove(container)

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

    def server_changed(self) -> None:
        if self.busy_with is None:
            self._schedule_phase(self.steady_phase())

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

    def superseding(self, revision: int) -> int | None:
        """The newer revision that replaces `revision` (last write wins), if there is one."""
        wanted = self.wanted_revision
        return wanted if wanted is not None and wanted != revision else None

    # -- phase --------------------------------------------------------------------------------

    def steady_phase(self) -> str:
        if self.stopped:
            return "stopped"
        if not self.servers:
            return "failed"
        states = [r.state for r in self.servers.values()]
        if any(s in ("failed", "restarting", "exited") for s in states):
            return "degraded"
        if any(r.health == "unhealthy" for r in self.servers.values()):
            return "degraded"
        return "healthy"

    async def set_phase(self, phase: str, reason: str = "") -> None:
        """Write the phase, then take it (a failed write leaves both where they were)."""
        if phase == self.phase:
            return
        await self.repo.update_toolbox(self.id, phase=phase)
        if phase == self.phase:  # a concurrent call took it meanwhile
            return
        previous, self.phase = self.phase, phase
        await self.emit(
            ev.TOOLBOX_PHASE,
            revision=self.revision,
            reason=reason,
            message=f"{previous} -> {phase}",
        )

    def _schedule_phase(self, phase: str) -> None:
        if phase != self.phase and (self._phase_task is None or self._phase_task.done()):
            # Supervised: a failed write is logged, counted and retried (with the phase as it
            # is by then), never lost in a task nobody awaits. One at a time: a change while
            # it runs is caught by the next call (every probe calls server_changed).
            self._phase_task = self.supervisor.spawn(
                f"phase {self.id}", "phase", self._sync_phase, forever=False
            )

    async def _sync_phase(self) -> None:
        if self.busy_with is None:  # an operation sets the phase when it finishes
            await self.set_phase(self.steady_phase())

    # -- events from the watcher --------------------------------------------------------------

    def on_container_exit(self, container_id: str, exit_code: int | None) -> None:
        for runner in [*self.servers.values(), *self.gate_runners.values()]:
            runner.on_container_exit(container_id, exit_code)

    def known_container_ids(self) -> set[str]:
        return {r.container.id for r in [*self.servers.values(), *self.gate_runners.values()]}

    # -- operations ---------------------------------------------------------------------------

    async def run_operation(
        self,
        op_id: str,
        work: Callable[[], Awaitable[tuple[str, str | None]]],
        revision: int | None = None,
    ) -> str:
        """Run `work` under the toolbox lock and record its result. Returns the final state."""
        async with self.lock:
            self.busy_with = op_id
            with structlog.contextvars.bound_contextvars(toolbox=self.id, operation=op_id):
                try:
                    state, error = await work()
                except DtmaError as exc:
                    state, error = "failed", exc.message
                except asyncio.CancelledError:
                    raise  # agent shutdown: the operation stays running; recovery finishes it
                except Exception as exc:
                    log.exception("operation_crashed")
                    state, error = "failed", f"internal error: {type(exc).__name__}"
                finally:
                    self.busy_with = None
                self._supervise_running()
                error = self.journal.redact(error, 2000) if error else error
                superseded = revision is not None and self.superseding(revision) is not None
                await self.repo.finish_operation(op_id, state, error, revision)
                await self.emit(
                    ev.OPERATION_FINISHED,
                    revision=revision,
                    reason=state,
                    message=error or "",
                    operation=op_id,
                )
                if self.servers or self.stopped:
                    await self.set_phase(self.steady_phase())
                elif state == "failed" and self.phase == "deploying" and not superseded:
                    await self.set_phase("failed", reason=error or "")
                return state

    def _supervise_running(self) -> None:
        """What every operation leaves behind: each running server of the toolbox supervised,
        even one that an operation halted and then failed to stop or remove."""
        for runner in self.servers.values():
            if runner.state == "running" and not runner.supervised:
                runner.resume()

    async def stop_server(self, runner: ServerRunner, reason: str = "") -> None:
        """Stop one server's container without it counting as a crash. Idempotent."""
        await runner.halt(expect_exit=True)
        try:
            await self.runtime.stop(runner.container.id)
        except Exception:
            seen = await _inspect_quietly(self.runtime, runner.container.id)
            if seen is not None and not seen.running:
                runner.mark_stopped()
            raise  # still running: supervised again when the operation ends (run_operation)
        runner.mark_stopped()
        await self.emit(
            ev.SERVER_STOPPED, server=runner.name, revision=runner.revision, reason=reason
        )

    async def delete(self) -> tuple[str, str | None]:
        await self.set_phase("deleting")
        for runner in [*self.servers.values(), *self.gate_runners.values()]:
            await runner.halt(expect_exit=True)
        errors = []
        for container in await self.runtime.list_managed(self.id):
            try:
                await self.remove_container(container)
            except DtmaError as exc:
                errors.append(exc.message)
        if self.secrets is not None:
            # The prefix also matches toolbox "<id>-x"'s containers: keep every container that
            # is not ours.
            others = {c.name for c in await self.runtime.list_managed() if c.toolbox != self.id}
            await self.secrets.files.sweep(others, prefix=f"dtma-{self.id}-", min_age=0)
        with contextlib.suppress(DtmaError):
            await self.runtime.remove_network(self.id)
        if errors:
            return "failed", "; ".join(errors)
        self.servers.clear()
        await self.repo.delete_toolbox(self.id)
        await self.emit(ev.TOOLBOX_DELETED)
        return "succeeded", None

    async def halt(self) -> None:
        """Agent shutdown: stop supervising, detach probes, leave every container running."""
        for runner in [*self.servers.values(), *self.gate_runners.values()]:
            await runner.halt()


async def _inspect_quietly(
    runtime: ContainerRuntime, container_id: str
) -> ObservedContainer | None:
    """inspect(), or None when even that fails (the caller is already handling a failure)."""
    try:
        return await runtime.inspect(container_id)
    except Exception:
        return None
