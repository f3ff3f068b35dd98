"""A server runner's restarts after a failure: backoff and budget (domain/restart.py), the
restart write-ahead, and the faults below the server: a failure seen while the engine is away or
after it restarted is not charged to the server (engine/engine_watch.py), and a restart that
finds Vault unreachable waits for it, charging nothing more.

ServerRunner (engine/server_runner.py) is the one class that sets these attributes; only its
steady task calls in here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog

from dtma.domain import gate as gate_reasons
from dtma.domain.containers import ObservedContainer
from dtma.domain.health import HealthTracker
from dtma.domain.restart import RestartTracker, Verdict
from dtma.engine import event_kinds as ev
from dtma.errors import DockerUnavailable, DtmaError, VaultUnavailable
from dtma.ports import EngineFaults, Probe, ProbeFactory
from dtma.spec.models import ServerSpec

if TYPE_CHECKING:
    from dtma.engine.server_runner import ServerHost

log = structlog.get_logger(__name__)

ENGINE_RESTARTED = "engine_restarted"
RECONCILE_GRACE_S = 60.0  # after an engine fault, the toolbox's reconcile replaces the runner
VAULT_RETRY_S = 1.0  # a restart that finds Vault unreachable tries again after this, doubling
VAULT_RETRY_MAX_S = 30.0

Create = Callable[[], Awaitable[ObservedContainer]]


class ServerRestarts:
    host: ServerHost
    spec: ServerSpec
    revision: int
    container: ObservedContainer
    state: str
    health: str
    restarts: int
    last_error: str | None
    exit_code: int | None
    _probe: Probe
    _probe_factory: ProbeFactory
    _tracker: RestartTracker
    _health: HealthTracker
    _engine: EngineFaults
    _epoch: int
    _exited: asyncio.Event
    _expected_exit: bool
    _started_at: float
    _clock: Callable[[], float]
    parked: bool

    @property
    def name(self) -> str:
        return self.spec.name

    async def save_restarts(self, *, pending: bool = False) -> None:
        raise NotImplementedError  # ServerRunner's

    async def _on_failure(self, kind: str, reason: str, detail: str) -> None:
        if not await self._engine.confirm(self._epoch):
            await self._park(detail)
            return
        self.last_error = f"{reason}: {detail}"
        await self.host.emit(
            kind, server=self.name, revision=self.revision, reason=reason, message=detail
        )
        while True:
            decision = self._tracker.on_failure(self._clock())
            if decision.verdict is Verdict.GIVE_UP:
                self.state = "failed"
                self.health = "unhealthy"
                await self.host.emit(
                    ev.SERVER_FAILED,
                    server=self.name,
                    revision=self.revision,
                    reason=decision.reason,
                    message=f"gave up after {decision.attempt} restarts within "
                    f"{self._tracker.policy.interval:g}s",
                )
                await self.save_restarts()
                self.host.server_changed()
                return
            self.state = "restarting"
            self.host.server_changed()
            await self.host.emit(
                ev.SERVER_RESTARTING,
                server=self.name,
                revision=self.revision,
                reason=decision.reason,
                message=f"attempt {decision.attempt} in {decision.delay:.2f}s",
            )
            await asyncio.sleep(decision.delay)
            if not await self._engine.confirm(self._epoch):
                # The daemon stops its containers before its API goes: the exit was the
                # engine's. Taken back before anything is saved.
                self._tracker.refund()
                await self._park("before the restart")
                return
            if await self._replace_container(decision.reason):
                return

    async def _restart_for_the_engine(self) -> None:
        """The engine stopped this server's container (a daemon restart without live-restore):
        replace it now, charging no restart budget. A replacement that cannot start falls back
        to the usual crash handling (budget, backoff)."""
        self.state = "restarting"
        self.host.server_changed()
        if not await self._replace_container(ENGINE_RESTARTED):
            self.state, self.exit_code = "exited", None
            self._exited.set()

    async def restart_now(self, reason: str, *, charged: bool, create: Create) -> None:
        """The agent's start-up reconcile: replace the container at once, through `create`
        (pull, admission), charged to the budget and counted only when `charged` (the exit was
        the server's, and not counted before the agent died). Raises DtmaError, leaving the
        write-ahead saved (the next start does not count it again)."""
        if charged:
            self._tracker.on_failure(self._clock())
        await self.replace(reason, counted=charged, create=create)

    async def _replace_container(self, reason: str) -> bool:
        """One restart of its own: replace (waiting for Vault). Returns whether the new
        container runs; on False the attempt is undone (and, when the engine went away
        meanwhile, the runner is parked)."""
        try:
            await self.replace(reason, counted=True, create=None)
        except DtmaError as exc:
            engines = isinstance(exc, DockerUnavailable) and not await self._engine.confirm(
                self._epoch
            )
            if engines:
                self._tracker.refund()  # before the save: the DB never holds it
            await self.save_restarts()
            if engines:
                await self._park(exc.message)
                return False
            self.last_error = f"{gate_reasons.START_FAILED}: {exc.message}"
            await self.host.emit(
                ev.SERVER_START_FAILED,
                server=self.name,
                revision=self.revision,
                reason=gate_reasons.START_FAILED,
                message=exc.message,
            )
            return False
        return True

    async def replace(self, reason: str, *, counted: bool, create: Create | None) -> None:
        """The restart write-ahead, the one copy: the count is saved `pending` before the old
        container goes, so that a kill -9 from here on neither loses it nor counts it twice;
        then recreate and settle. Without `create`, the host creates (waiting for Vault).
        Raises DtmaError with the count taken back in memory only (the caller saves or not)."""
        if counted:
            self.restarts += 1
        await self.save_restarts(pending=True)
        replaced = self.container
        try:
            if create is None:
                await self._recreate_when_vault_answers()
            else:
                await self._recreate(create)
        except asyncio.CancelledError:
            # Halted by an operation (a restart, stop or removal of its own) before the new
            # container existed: this restart did not happen; the operation counts its own.
            if counted and self.container is replaced:
                self.restarts -= 1
            raise
        except DtmaError:
            if counted:
                self.restarts -= 1
            raise
        await self.save_restarts()
        await self.host.emit(
            ev.SERVER_RESTARTED,
            server=self.name,
            revision=self.revision,
            reason=reason,
            message=f"container {self.container.id[:12]}, restart {self.restarts}",
        )

    async def _recreate_when_vault_answers(self) -> None:
        """_recreate(), retried while Vault is unreachable: a Vault outage pauses this restart
        (the secrets are read at the create) and charges nothing more than the one attempt it
        began with. Told once per outage; backoff doubling to VAULT_RETRY_MAX_S."""
        wait = VAULT_RETRY_S
        while True:
            try:
                await self._recreate()
                return
            except VaultUnavailable as exc:
                if wait == VAULT_RETRY_S:
                    self.last_error = f"{gate_reasons.SECRETS_FAILED}: {exc.message}"
                    await self.host.emit(
                        ev.SERVER_START_FAILED,
                        server=self.name,
                        revision=self.revision,
                        reason=gate_reasons.SECRETS_FAILED,
                        message=f"{exc.message}; the restart waits for Vault",
                    )
                await asyncio.sleep(wait)
                wait = min(VAULT_RETRY_MAX_S, wait * 2)

    async def _park(self, detail: str) -> None:
        """The engine went away or restarted since this runner's container was known: wait
        for the toolbox's reconcile after its return, which replaces this runner. Should none
        come within RECONCILE_GRACE_S, take the new epoch as this runner's own and go on."""
        self.parked = True
        log.info("server_failure_is_the_engines", detail=detail, epoch=self._epoch)
        try:
            await self._engine.moved_from(self._epoch)
            await asyncio.sleep(RECONCILE_GRACE_S)
        finally:
            self.parked = False
        log.warning("server_not_reconciled_after_engine_fault", epoch=self._engine.epoch)
        self._epoch = self._engine.epoch

    def rebase(self, epoch: int) -> None:
        """Kept through the engine's return (its container still runs): failures from now on
        are charged in `epoch`."""
        self._epoch = epoch

    async def _recreate(self, create: Create | None = None) -> None:
        old = self.container
        self._expected_exit = True
        await self._probe.close()
        await self.host.remove_container(old)
        made = create() if create else self.host.create_container(self.spec, self.revision)
        self.container = await made
        self._probe = self._probe_factory(self.spec, self.container, True)
        self._exited = asyncio.Event()
        self._expected_exit = False
        self.exit_code = None
        self._health.reset()
        self._started_at = self._clock()
        self.state = "running"
        self.health = "unknown"
        self.host.server_changed()
