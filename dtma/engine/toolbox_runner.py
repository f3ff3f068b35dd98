"""ToolboxRunner: one per toolbox (Nomad's alloc runner, small). Runs one operation at a time
(an asyncio.Lock, FIFO, so later operations queue), is the ServerHost of its server runners
(containers, events), and passes container exits from the watcher to them.

Its state and every write of it (memory and the state DB: serving revision, servers, gate; the
phase, derived from them and the running operation) are ToolboxState's (engine/toolbox_state.py),
the one writer it is built on. Container creation is in engine/container_factory.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence

import structlog

from dtma.domain.containers import NO_CONTAINER_ID, ObservedContainer
from dtma.domain.phase import Activity, Ended
from dtma.engine import event_kinds as ev
from dtma.engine.admission import Admission, default_max_starts
from dtma.engine.container_factory import ContainerFactory
from dtma.engine.journal import Journal
from dtma.engine.secrets import SecretInjector
from dtma.engine.server_runner import ServerRunner
from dtma.engine.supervisor import Supervisor
from dtma.engine.toolbox_state import ToolboxState
from dtma.errors import DtmaError
from dtma.ports import ContainerRuntime, EngineFaults, ProbeFactory, ToolboxStore
from dtma.spec.models import ServerSpec, ToolboxSpec

log = structlog.get_logger(__name__)


class ToolboxRunner(ToolboxState):
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
        super().__init__(toolbox_id, repo=repo, journal=journal, supervisor=supervisor, clock=clock)
        # Shared by every toolbox of the agent: bounds the servers starting at once.
        self.admission = admission or Admission(default_max_starts())
        # The engine's fault class (engine/engine_watch.py), and the engine epoch this toolbox's
        # runners were last reconciled in (engine/engine_return.py and recovery.py move it).
        self.engine = engine
        self.reconciled_epoch = engine.epoch
        self.secrets = secrets
        self.runtime = runtime
        self.probe_factory = probe_factory
        self.rng = rng or random.Random()
        self.lock = asyncio.Lock()
        self._containers = ContainerFactory(toolbox_id, runtime, secrets)

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

    # -- ServerHost (its emit, server_changed, record_tools, save_restarts: ToolboxState's) ---

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

    # -- events from the watcher --------------------------------------------------------------

    def on_container_exit(self, container_id: str, exit_code: int | None) -> None:
        for runner in [*self.servers.values(), *self.gate_runners.values()]:
            runner.on_container_exit(container_id, exit_code)

    def known_container_ids(self) -> set[str]:
        """The containers its runners hold (not a given-up server's stand-in: none exists)."""
        runners = [*self.servers.values(), *self.gate_runners.values()]
        return {r.container.id for r in runners} - {NO_CONTAINER_ID}

    # -- operations ---------------------------------------------------------------------------

    async def run_operation(
        self,
        op_id: str,
        work: Callable[[], Awaitable[tuple[str, str | None]]],
        revision: int | None = None,
        *,
        supersedable: bool = False,
    ) -> str:
        """Run `work` under the toolbox lock and record its result. Returns the final state.
        `supersedable`: an apply, which a newer apply replaces (it runs next); a rollback or a
        server operation never is."""
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
                superseded = (
                    supersedable and revision is not None and self.superseding(revision) is not None
                )
                try:
                    await self.repo.finish_operation(op_id, state, error, revision)
                    await self.emit(
                        ev.OPERATION_FINISHED,
                        revision=revision,
                        reason=state,
                        message=error or "",
                        operation=op_id,
                    )
                finally:  # its activity ends with it, even when its record could not be written
                    await self.end(_ended(state, superseded), error or "")
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
        await self.begin(Activity.DELETING)
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
        await self.forget()
        return "succeeded", None

    async def halt(self) -> None:
        """Agent shutdown: stop supervising, detach probes, leave every container running."""
        for runner in [*self.servers.values(), *self.gate_runners.values()]:
            await runner.halt()


def _ended(state: str, superseded: bool) -> Ended:
    """How an operation that ended in `state` counts for the phase (domain/phase.py)."""
    if state != "failed":
        return Ended.SUCCEEDED  # succeeded, or rolled back: the servers say the rest
    return Ended.SUPERSEDED if superseded else Ended.FAILED


async def _inspect_quietly(
    runtime: ContainerRuntime, container_id: str
) -> ObservedContainer | None:
    """inspect(), or None when even that fails (the caller is already handling a failure)."""
    try:
        return await runtime.inspect(container_id)
    except Exception:
        return None
