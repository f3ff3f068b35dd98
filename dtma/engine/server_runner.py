"""ServerRunner: one per live container of the serving revision (Nomad's task runner, small).

In the gate it only answers probe_once(). Once the toolbox is stable, run_steady() probes at
`health.interval`, reacts to crashes reported by the event watcher, and restarts with backoff
(domain/restart.py). Exits the agent caused itself (stop, remove) are expected and ignored.
Concurrency: all methods run on the event loop; one steady task per runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog

from dtma.cancellation import cancel_and_wait
from dtma.domain import gate as gate_reasons
from dtma.domain.containers import ObservedContainer
from dtma.domain.health import HealthTracker
from dtma.domain.probe import ProbeResult
from dtma.domain.restart import RestartTracker
from dtma.engine import event_kinds as ev
from dtma.engine.call_guard import CallGuard
from dtma.engine.server_calls import ServerCalls
from dtma.engine.server_restarts import ServerRestarts
from dtma.engine.supervisor import Supervisor
from dtma.observability.metrics import METRICS
from dtma.ports import EngineFaults, ProbeFactory
from dtma.spec.models import Restart, ServerSpec, publish_address

log = structlog.get_logger(__name__)

STARTUP_PROBE_INTERVAL = 0.5


class ServerHost(Protocol):
    """What a ServerRunner may ask of its toolbox: a narrow capability, not the toolbox."""

    id: str

    async def create_container(self, server: ServerSpec, revision: int) -> ObservedContainer: ...
    async def remove_container(self, container: ObservedContainer) -> None: ...
    async def emit(
        self, kind: str, *, server: str, revision: int, reason: str = "", message: str = ""
    ) -> None: ...
    def server_changed(self) -> None: ...
    async def record_tools(self, server: str, revision: int, tools: list[str]) -> None: ...
    async def save_restarts(
        self,
        server: str,
        revision: int,
        restarts: int,
        history: Sequence[float],
        gave_up: bool,
        pending: bool = False,
    ) -> None: ...


class ServerRunner(ServerRestarts, ServerCalls):
    def __init__(
        self,
        host: ServerHost,
        spec: ServerSpec,
        revision: int,
        container: ObservedContainer,
        *,
        fresh: bool,
        restart_policy: Restart,
        probe_factory: ProbeFactory,
        clock: Callable[[], float],
        rng: random.Random | None = None,
        restarts: int = 0,
        startup_deadline: float = 60.0,
        history: Sequence[float] = (),
        supervisor: Supervisor,
        engine: EngineFaults,
    ) -> None:
        self.host = host
        self.spec = spec
        self.revision = revision
        self.container = container
        self.state = "running" if container.running else container.state
        self.health = "unknown"
        self.restarts = restarts
        self.tools: list[str] = []
        self.last_error: str | None = None
        self.exit_code: int | None = None
        self._probe_factory = probe_factory
        self._probe = probe_factory(spec, container, fresh)
        self._clock = clock
        self._tracker = RestartTracker(restart_policy, rng or random.Random())
        self._tracker.restore(history)
        self._supervisor = supervisor
        # The engine epoch this runner's container is known in: a failure seen after the engine
        # went away or restarted is the engine's, never charged to this server.
        self._engine = engine
        self._epoch = engine.epoch
        self._exited = asyncio.Event()
        self._calls = CallGuard(spec.name)  # in flight; cut on exit
        self._expected_exit = False
        self._steady: asyncio.Task[None] | None = None
        # Probe results -> health, by the rules the gate uses too (domain/health.py).
        self._health = HealthTracker(spec.health.failure_threshold)
        self._startup_deadline = startup_deadline
        self._started_at = clock()
        self._draining = False
        self._restart_first = False
        self._ask_at_once = not fresh  # an adopted container is up already: no start-up wait
        self.parked = False  # waiting out an engine fault for the toolbox's reconcile
        self._tool_defs: tuple[tuple[str, tuple[str, ...]], list[dict[str, Any]]] | None = None

    @property
    def restart_history(self) -> tuple[float, ...]:
        """Clock times of the restarts inside the restart window (carried to a replacement)."""
        return self._tracker.history()

    async def save_restarts(self, *, pending: bool = False) -> None:
        """Persist the restart count and window, so an agent restart keeps the budget.
        pending=True is the write-ahead of a restart (records.RestartState)."""
        await self.host.save_restarts(
            self.name,
            self.revision,
            self.restarts,
            self._tracker.history(),
            self.state == "failed",
            pending,
        )

    @property
    def restarting(self) -> bool:
        """A replacement of its container is due or under way (a crash's, or the one the
        engine's return asked for)."""
        return self._restart_first or self.state == "restarting"

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    @property
    def endpoint(self) -> str | None:
        if self.container.host_port:
            ip = publish_address(self.spec.publish or "127.0.0.1:0")[0]
            host = f"[{ip}]" if ":" in ip else ip
            return f"http://{host}:{self.container.host_port}{self.spec.http_path}"
        return self._probe.endpoint

    # -- events from the watcher --------------------------------------------------------------

    def on_container_exit(self, container_id: str, exit_code: int | None) -> None:
        if container_id != self.container.id or self._expected_exit or self.exited:
            return
        self.exit_code = exit_code
        self.state = "exited"
        self._exited.set()
        self.host.server_changed()  # its toolbox's phase follows its servers (domain/phase.py)
        self._calls.cut_all()  # a crashed server's calls never hang (engine/call_guard.py)

    # -- probing ------------------------------------------------------------------------------

    async def probe_once(self, *, full: bool = True) -> ProbeResult:
        result = await self._probe.check(full=full)
        METRICS.probe_latency.labels(self.spec.transport).observe(result.latency_ms / 1000)
        if not result.healthy:
            METRICS.probe_failures.labels(self.spec.transport, result.reason).inc()
        was_healthy = self._health.ever_healthy
        self._health.observe(result, self._clock())
        if result.healthy:
            if not was_healthy:
                self.last_error = None  # refusals while it was starting are not errors
            self.health = "healthy"
            if full and result.tools and list(result.tools) != self.tools:
                self.tools = list(result.tools)
                await self.host.record_tools(self.name, self.revision, self.tools)
        else:
            self.last_error = self._health.last_failure
        return result

    # -- steady state -------------------------------------------------------------------------

    def start_steady(self, *, restart_first: bool = False) -> None:
        """Supervise in a task of its own, in a fresh logging context: it outlives the operation
        that started it, so it must not carry that operation's id in its log lines. With
        `restart_first`, its container (stopped by the engine, not by the server) is replaced
        first, charging no restart budget."""
        self._restart_first = restart_first
        if self._steady is None or self._steady.done():
            self._steady = asyncio.create_task(
                self._supervisor.run(
                    f"server {self.host.id}/{self.name}",
                    "server",
                    self._run_steady_logged,
                    forever=False,
                ),
                name=f"server-{self.name}",
                context=contextvars.Context(),
            )

    async def _run_steady_logged(self) -> None:
        with structlog.contextvars.bound_contextvars(
            toolbox=self.host.id, server=self.name, revision=self.revision
        ):
            await self._run_steady()

    async def _run_steady(self) -> None:
        if self._restart_first:
            self._restart_first = False
            await self._restart_for_the_engine()
        while self.state not in ("failed", "stopped"):
            if self.exited:
                await self._on_failure(
                    ev.SERVER_CRASHED, gate_reasons.CONTAINER_EXITED, f"exit code {self.exit_code}"
                )
                continue
            # Until the first healthy answer (a fresh or adopted container), probe quickly; after
            # that, at the configured interval.
            wait = (
                self.spec.health.interval if self._health.ever_healthy else STARTUP_PROBE_INTERVAL
            )
            wait, self._ask_at_once = (0.0 if self._ask_at_once else wait), False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._exited.wait()
            if self.exited:
                continue
            result = await self.probe_once(
                full=not self._health.ever_healthy or self.spec.transport != "stdio"
            )
            self.host.server_changed()
            if result.healthy:
                continue
            starting = not self._health.ever_healthy
            if starting and self._clock() - self._started_at < self._startup_deadline:
                self._health.forgive()  # still starting: not a failure yet (as in the gate)
                continue
            if (starting or self._health.over_threshold) and not self.exited:
                self.health = "unhealthy"
                self.host.server_changed()
                await self._on_failure(
                    ev.SERVER_UNHEALTHY,
                    gate_reasons.PROBE_FAILED,
                    f"{self._health.streak} consecutive probe failures, last: {self.last_error}",
                )

    # -- lifecycle ----------------------------------------------------------------------------

    async def halt(self, *, expect_exit: bool = False) -> None:
        """Stop probing and supervising; leave the container as it is. With expect_exit, the
        container's coming exit is the agent's own doing, not a crash. Idempotent."""
        if expect_exit:
            self._expected_exit = True
        await cancel_and_wait(self._steady)
        self._steady = None
        await self._probe.close()

    @property
    def supervised(self) -> bool:
        return self._steady is not None and not self._steady.done()

    def resume(self) -> None:
        """Undo halt(expect_exit=True) when the container kept running after all (a stop that
        failed): its exits are crashes again, and it is supervised again. Idempotent."""
        if self.state in ("failed", "removed", "stopped"):
            return
        self._expected_exit = False
        self.start_steady()

    def mark_stopped(self) -> None:
        """Its container was stopped on purpose (a stop operation, or one found stopped in a
        stopped toolbox): not a crash, and nothing to probe."""
        self.state, self.health = "stopped", "unknown"
        self.host.server_changed()

    def mark_given_up(self, why: str) -> None:
        """Its restart budget was spent before this runner existed (found so by a reconcile):
        kept `failed`, its container left as it is."""
        self.state, self.health = "failed", "unhealthy"
        self.last_error = why
        self.host.server_changed()

    def mark_failed(self) -> None:
        """No container serves this server any more and none could be made (a restart whose
        create failed): failed, so that the toolbox reads degraded; the attempt counts."""
        self.restarts += 1
        self.state = "failed"
        self.health = "unhealthy"
        self.host.server_changed()

    async def remove(self) -> None:
        """Drain the calls in flight (bounded), halt, then remove the container (an expected
        exit). Idempotent."""
        await self.drain()
        await self.halt(expect_exit=True)
        await self.host.remove_container(self.container)
        self.state = "removed"
        self.host.server_changed()
