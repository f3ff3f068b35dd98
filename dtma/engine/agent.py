"""Agent: the engine's facade for the API. Owns the toolbox runners and three loops:
the Docker event watcher (crashes within a second), a periodic re-list (backstop for missed
events, and the orphan reaper with its grace period), and one task per queued operation.

This module is the lifecycle (start-up adoption, the engine's return, stop) and the write side
(apply, rollback, server operations, secret refresh, delete); the read side is
engine/agent_reads.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from dtma.cancellation import cancel_and_wait
from dtma.domain.records import OperationRecord
from dtma.engine.admission import Admission, default_max_starts
from dtma.engine.agent_reads import AgentReads
from dtma.engine.delete_guard import DeleteGuard
from dtma.engine.engine_return import reconcile_when_back
from dtma.engine.engine_watch import EngineWatch
from dtma.engine.journal import Journal
from dtma.engine.operations import Operations
from dtma.engine.recovery import recover_all
from dtma.engine.rollout import run_rollout
from dtma.engine.rotation import refresh_secrets
from dtma.engine.secrets import SecretInjector
from dtma.engine.server_ops import server_work
from dtma.engine.spec_parser import SpecParser
from dtma.engine.status_view import ListingCache
from dtma.engine.supervisor import Supervisor, watch_task
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.engine.watcher import ContainerWatcher
from dtma.errors import Conflict, DockerUnavailable, NotFound
from dtma.gateway.catalog import CatalogGateway
from dtma.ports import Clock, ContainerRuntime, ProbeFactory, StateStore
from dtma.spec.hashing import canonical_json, spec_hash
from dtma.spec.validate import SpecPolicy, validate_toolbox_id

log = structlog.get_logger(__name__)

RELIST_INTERVAL_S = 10.0
REAP_GRACE_S = 60.0
RECOVERY_WAIT_S = 20.0


@dataclass(frozen=True)
class ApplyResult:
    toolbox: str
    revision: int
    operation: str | None
    unchanged: bool


class Agent(AgentReads):
    def __init__(
        self,
        *,
        runtime: ContainerRuntime,
        repo: StateStore,
        journal: Journal,
        probe_factory: ProbeFactory,
        policy: SpecPolicy,
        engine: EngineWatch,
        supervisor: Supervisor,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        relist_interval: float = RELIST_INTERVAL_S,
        reap_grace: float = REAP_GRACE_S,
        events_source: Callable[[], Any] | None = None,
        secrets: SecretInjector | None = None,
        agent_id: str = "",
        hold_orphans: bool = False,
        recovery_wait: float = RECOVERY_WAIT_S,
        max_starts: int | None = None,
    ) -> None:
        self.agent_id = agent_id
        # One bound for the whole agent on servers starting at once (engine/admission.py).
        self.admission = Admission(max_starts or default_max_starts())
        # An empty state dir: orphans of our id found at start are held from the reaper.
        self._hold_orphans = hold_orphans
        self.secrets = secrets
        self._recovery_wait = recovery_wait
        self.runtime = runtime
        self.repo = repo
        self.journal = journal
        self._listing = ListingCache(lambda text, limit: self.journal.redact(text, limit))
        self.policy = policy
        self._specs = SpecParser(policy)
        self._probe_factory = probe_factory
        self._clock = clock
        self._rng = rng or random.Random()

        self._events_source = events_source
        self._runners: dict[str, ToolboxRunner] = {}
        self.gateway = CatalogGateway(self._runners)  # the MCP endpoint's port
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        # An apply that races a delete is refused, never lost.
        self._deletes = DeleteGuard()
        self.supervisor = supervisor
        self.started = False
        # The engine's fault class: on its return every toolbox is reconciled (_on_engine_back).
        self.engine = engine
        engine.on_back(self._on_engine_back)
        self.operations = Operations(repo, engine)
        # The heartbeat loop's status for GET /v1/agent (engine/heartbeat.py); None: no controller.
        self.controller: Callable[[], dict[str, Any]] | None = None
        self.watcher = ContainerWatcher(
            runtime, self._runners, journal, secrets, clock, relist_interval, reap_grace, engine
        )

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover every known toolbox, then start the watcher and the re-list loop. Raises
        DockerUnavailable while the engine does not answer (the caller retries)."""
        if not await self.engine.check():
            raise DockerUnavailable(f"Docker engine unreachable: {self.engine.error}")
        self._loop("engine watch", "engine", self.engine.run)
        if self._events_source is not None:
            source = self._events_source
            self._loop("event watcher", "events", lambda: self.watcher.watch_events(source))
        if self._hold_orphans:
            # Before recovery and before the reaper: what the engine holds now that no toolbox
            # of the (empty) state knows.
            known = {r.id for r in await self.repo.toolboxes()}
            await self.watcher.hold.hold_unknown(self.runtime, self.agent_id, known)
        if self.secrets is not None:
            # Nothing is being created yet, so secret files whose container is gone (the agent
            # died between removing a container and its files) go now, not a grace period later.
            listed = {c.name for c in await self.runtime.list_managed()}
            await self.secrets.files.sweep(listed, min_age=0)
        slow = await recover_all(self.runtime, self.repo, self._runner, self._recovery_wait)
        for task in slow:
            watch_task(task, task.get_name(), "recovery")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._loop("re-list loop", "relist", self.watcher.relist_loop)
        self.started = True

    def _loop(self, name: str, kind: str, body: Callable[[], Awaitable[None]]) -> None:
        """Run one of the agent's loops under the supervisor until stop()."""
        self._loops.append(asyncio.create_task(self.supervisor.run(name, kind, body), name=kind))

    def adopt_orphans(self) -> dict[str, int]:
        """Release the orphan hold: the reaper treats those like any container of ours."""
        containers, networks = self.watcher.hold.release()
        log.warning("orphans_released", containers=containers, networks=networks)
        return {"containers": containers, "networks": networks}

    async def stop(self, *, final: bool = True) -> None:
        """Stop supervising; containers keep running (the next start adopts them). With
        final=False (a start that failed and is retried) the supervisor's other tasks and the
        spec parser stay."""
        self.started = False  # the engine's return no longer reconciles (_on_engine_back)
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        for task in [*self._loops, *self._tasks]:
            await cancel_and_wait(task)
        self._loops.clear()
        await self.operations.stop()
        for tb in self._runners.values():
            await tb.halt()
        if final:
            await self.supervisor.stop()
            self._specs.close()

    def _runner(self, toolbox_id: str) -> ToolboxRunner:
        tb = self._runners.get(toolbox_id)
        if tb is None:
            tb = ToolboxRunner(
                toolbox_id,
                runtime=self.runtime,
                repo=self.repo,
                journal=self.journal,
                probe_factory=self._probe_factory,
                clock=self._clock,
                rng=self._rng,
                secrets=self.secrets,
                supervisor=self.supervisor,
                engine=self.engine,
                admission=self.admission,
            )
            self._runners[toolbox_id] = tb
        return tb

    # -- operations ---------------------------------------------------------------------------

    async def apply(
        self, toolbox_id: str, body: bytes | str, if_match: int | None = None
    ) -> ApplyResult:
        validate_toolbox_id(toolbox_id)
        spec = await self._specs.parse(body)
        self._deletes.refuse(toolbox_id)
        deletes = self._deletes.submitted(toolbox_id)
        current = self._runners.get(toolbox_id)
        rev, created = await self.repo.add_revision(
            toolbox_id,
            canonical_json(spec),
            spec_hash(spec),
            if_match,
            retry=current is not None and current.phase == "failed" and not current.lock.locked(),
        )
        if self._deletes.submitted(toolbox_id) != deletes:  # a delete came in meanwhile
            if created:
                await self._runner(toolbox_id).clear_target(rev.number)
            self._deletes.refuse(toolbox_id, raced=True)
        if not created:
            return ApplyResult(toolbox_id, rev.number, None, True)
        tb = self._runner(toolbox_id)
        tb.want_revision(rev.number)
        op = await self.operations.submit(
            tb,
            "apply",
            rev.number,
            lambda op_id: run_rollout(tb, rev.number, op_id, is_rollback=False),
        )
        return ApplyResult(toolbox_id, rev.number, op, False)

    async def rollback(self, toolbox_id: str, revision: int | None = None) -> str:
        tb = await self._existing(toolbox_id)
        record = await self.repo.toolbox(toolbox_id)
        assert record is not None
        if revision is None:
            target = await self.repo.newest_stable_other_than(toolbox_id, record.current_revision)
            if target is None:
                raise Conflict("there is no stable revision to roll back to")
            revision = target.number
        elif await self.repo.revision(toolbox_id, revision) is None:
            raise NotFound(f"toolbox {toolbox_id} has no revision {revision}")
        number = revision
        return await self.operations.submit(
            tb, "rollback", number, lambda op_id: run_rollout(tb, number, op_id, is_rollback=True)
        )

    async def server_operation(self, toolbox_id: str, kind: str, servers: list[str] | None) -> str:
        tb = await self._existing(toolbox_id)
        if servers:
            record = await self.repo.toolbox(toolbox_id)
            rev = (
                await self.repo.revision(toolbox_id, record.current_revision or 0)
                if record
                else None
            )
            names = {s["name"] for s in json.loads(rev.spec)["servers"]} if rev else set()
            unknown = sorted(set(servers) - names)
            if unknown:
                raise NotFound(f"toolbox {toolbox_id} has no server {', '.join(unknown)}")
        work = server_work(kind, tb, servers)
        return await self.operations.submit(
            tb, kind, tb.revision, lambda _op: work(), params={"servers": servers or []}
        )

    async def refresh_secrets(self, toolbox_id: str) -> str:
        tb = await self._existing(toolbox_id)
        return await self.operations.submit(
            tb, "refresh_secrets", tb.revision, lambda _op: refresh_secrets(tb)
        )

    async def delete(self, toolbox_id: str) -> str:
        tb = await self._existing(toolbox_id)

        async def work(_op: str) -> tuple[str, str | None]:
            state, error = await tb.delete()
            if state == "succeeded":
                self._runners.pop(toolbox_id, None)
            return state, error

        return await self._deletes.submit(
            toolbox_id, work, lambda w: self.operations.submit(tb, "delete", tb.revision, w)
        )

    def _on_engine_back(self, epoch: int) -> None:
        """The engine answers again after an outage or a daemon restart: reconcile every
        toolbox (queued behind any operation holding its lock, which reconciles first itself)."""
        if not self.started:
            return  # the start's recovery is the first pass
        for tb in list(self._runners.values()):
            self.supervisor.spawn(
                f"reconcile {tb.id} for engine epoch {epoch}",
                "reconcile",
                lambda tb=tb: reconcile_when_back(tb),  # type: ignore[misc]
                forever=False,
            )

    async def wait(self, op_id: str, timeout: float) -> OperationRecord:
        """Wait up to `timeout` for the operation to finish; return its record either way."""
        return await self.operations.wait(op_id, timeout)

    async def _existing(self, toolbox_id: str) -> ToolboxRunner:
        """The toolbox's runner, made if need be. Raises NotFound for an unknown toolbox."""
        return await self._known(toolbox_id) or self._runner(toolbox_id)
