"""Agent: the engine's facade for the API. Owns the toolbox runners and three loops:
the Docker event watcher (crashes within a second), a periodic re-list (backstop for missed
events, and the orphan reaper with its grace period), and one task per queued operation.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from dtma import __version__
from dtma.cancellation import cancel_and_wait
from dtma.domain.records import OperationRecord, ToolboxListing
from dtma.engine.admission import Admission, default_max_starts
from dtma.engine.engine_watch import EngineWatch
from dtma.engine.journal import Journal
from dtma.engine.operations import Operations
from dtma.engine.reconcile import sync_with_engine
from dtma.engine.recovery import recover_all
from dtma.engine.rollout import run_rollout
from dtma.engine.rotation import refresh_secrets
from dtma.engine.secrets import SecretInjector
from dtma.engine.server_ops import restart_servers, start_servers, stop_servers
from dtma.engine.spec_parser import SpecParser
from dtma.engine.status_view import ListingCache, status_fields, toolbox_status
from dtma.engine.supervisor import Supervisor, watch_task
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.engine.watcher import ContainerWatcher
from dtma.errors import Conflict, DockerUnavailable, DtmaError, NotFound, OperationQueued
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


class Agent:
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
        # Toolboxes with a delete queued or running (its operation id), and a count of deletes
        # submitted per toolbox: an apply that races a delete is refused, never lost.
        self._deleting: dict[str, str] = {}
        self._deletes: dict[str, int] = {}
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
        self._loops.append(
            asyncio.create_task(
                self.supervisor.run("engine watch", "engine", self.engine.run), name="engine"
            )
        )
        if self._events_source is not None:
            source = self._events_source
            self._loops.append(
                asyncio.create_task(
                    self.supervisor.run(
                        "event watcher", "events", lambda: self.watcher.watch_events(source)
                    ),
                    name="events",
                )
            )
        if self._hold_orphans:
            # Before recovery and before the reaper: what the engine holds now that no toolbox
            # of the (empty) state knows.
            known = {r.id for r in await self.repo.toolboxes()}
            await self._hold(await self.runtime.list_managed(), known)
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
        self._loops.append(
            asyncio.create_task(
                self.supervisor.run("re-list loop", "relist", self.watcher.relist_loop),
                name="relist",
            )
        )
        self.started = True

    async def _hold(self, observed: list[Any], known: set[str]) -> None:
        """Keep the reaper off what our id left running before the state dir was emptied."""
        containers = [c for c in observed if c.agent == self.agent_id and c.toolbox not in known]
        networks = [n for n in await self.runtime.list_networks() if n.toolbox not in known]
        if not containers and not networks:
            return
        self.watcher.hold.hold(containers, networks)
        log.warning(
            "orphans_held",
            agent_id=self.agent_id,
            containers=len(containers),
            networks=len(networks),
            toolboxes=sorted({c.toolbox for c in containers} | {n.toolbox for n in networks}),
            message="started on an empty state dir while containers of this agent id exist: "
            "they are NOT reaped until `dtma adopt` (POST /v1/agent/adopt) releases them",
        )

    def adopt_orphans(self) -> dict[str, int]:
        """Release the orphan hold: the reaper treats those like any container of ours."""
        containers, networks = self.watcher.hold.release()
        log.warning("orphans_released", containers=containers, networks=networks)
        return {"containers": containers, "networks": networks}

    async def stop(self, *, final: bool = True) -> None:
        """Stop supervising; containers keep running (the next start adopts them). With
        final=False (a start that failed and is retried) the supervisor's other tasks and the
        spec parser stay."""
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
        self._refuse_while_deleting(toolbox_id)
        deletes = self._deletes.get(toolbox_id, 0)
        current = self._runners.get(toolbox_id)
        rev, created = await self.repo.add_revision(
            toolbox_id,
            canonical_json(spec),
            spec_hash(spec),
            if_match,
            retry=current is not None and current.phase == "failed" and not current.lock.locked(),
        )
        if self._deletes.get(toolbox_id, 0) != deletes:  # a delete came in meanwhile
            if created:
                await self._runner(toolbox_id).clear_target(rev.number)
            self._refuse_while_deleting(toolbox_id, raced=True)
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
        work = {"restart": restart_servers, "stop": stop_servers, "start": start_servers}[kind]
        return await self.operations.submit(
            tb, kind, tb.revision, lambda _op: work(tb, servers), params={"servers": servers or []}
        )

    async def refresh_secrets(self, toolbox_id: str) -> str:
        tb = await self._existing(toolbox_id)
        return await self.operations.submit(
            tb, "refresh_secrets", tb.revision, lambda _op: refresh_secrets(tb)
        )

    async def delete(self, toolbox_id: str) -> str:
        tb = await self._existing(toolbox_id)
        pending = self._deleting.get(toolbox_id)
        if pending is not None and pending != "pending":
            return pending  # already queued: the same operation

        async def work(op_id: str) -> tuple[str, str | None]:
            try:
                state, error = await tb.delete()
                if state == "succeeded":
                    self._runners.pop(toolbox_id, None)
                return state, error
            finally:
                if self._deleting.get(toolbox_id) == op_id:
                    del self._deleting[toolbox_id]

        self._deletes[toolbox_id] = self._deletes.get(toolbox_id, 0) + 1
        self._deleting[toolbox_id] = "pending"
        try:
            op = await self.operations.submit(tb, "delete", tb.revision, work)
        except OperationQueued as queued:  # queued all the same: a PUT meanwhile is refused
            self._deleting[toolbox_id] = queued.operation
            raise
        except BaseException:
            self._deleting.pop(toolbox_id, None)
            raise
        self._deleting[toolbox_id] = op
        return op

    def _refuse_while_deleting(self, toolbox_id: str, raced: bool = False) -> None:
        op = self._deleting.get(toolbox_id)
        if op is not None or raced:
            raise Conflict(
                f"toolbox {toolbox_id} is being deleted"
                + (f" (operation {op})" if op and op != "pending" else "")
                + "; apply it again once the delete has finished"
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
                lambda tb=tb: self._reconcile(tb),  # type: ignore[misc]
                forever=False,
            )

    async def _reconcile(self, tb: ToolboxRunner) -> None:
        async with tb.lock:
            try:
                await sync_with_engine(tb)
            except DockerUnavailable as exc:
                # Gone again: the next epoch brings another pass.
                log.warning("reconcile_waits_for_the_engine", toolbox=tb.id, error=exc.message)

    async def wait(self, op_id: str, timeout: float) -> OperationRecord:
        """Wait up to `timeout` for the operation to finish; return its record either way."""
        return await self.operations.wait(op_id, timeout)

    async def _existing(self, toolbox_id: str) -> ToolboxRunner:
        validate_toolbox_id(toolbox_id)
        if await self.repo.toolbox(toolbox_id) is None:
            raise NotFound(f"no toolbox {toolbox_id}")
        return self._runner(toolbox_id)

    # -- reads --------------------------------------------------------------------------------

    async def status(self, toolbox_id: str) -> dict[str, Any]:
        validate_toolbox_id(toolbox_id)
        record = await self.repo.toolbox(toolbox_id)
        if record is None:
            raise NotFound(f"no toolbox {toolbox_id}")
        latest = await self.repo.latest_revision(toolbox_id)
        return self._status(
            (
                toolbox_id,
                record.phase,
                record.stable_revision,
                record.updated_at,
                latest.number if latest else None,
            )
        )

    def _status(self, row: ToolboxListing) -> dict[str, Any]:
        return toolbox_status(row, self._runners.get(row[0]), self.journal.redact)

    async def info(self) -> dict[str, Any]:
        """Version, host, Docker version (None while unreachable) and counts."""
        try:
            version, api = await self.runtime.engine_version()
            docker: dict[str, str] | None = {"version": version, "api_version": api}
        except DtmaError:
            docker = None
        phases: dict[str, int] = {}
        for tb in self._runners.values():
            phases[tb.phase] = phases.get(tb.phase, 0) + 1
        return {
            "version": __version__,
            "agent_id": self.agent_id,
            "orphans": self.watcher.hold.describe(),
            "host": socket.gethostname(),
            "docker": docker,
            "toolboxes": len(self._runners),
            "servers": sum(len(tb.servers) for tb in self._runners.values()),
            "phases": phases,
            "policy": self.policy.describe(),
            "controller": self.controller() if self.controller else None,
        }

    def metrics_state(self) -> list[tuple[str, str, list[tuple[str, bool]]]]:
        """(toolbox, phase, [(server, healthy)]) for the gauges; synchronous, in memory."""
        return [
            (tb.id, tb.phase, [(r.name, r.health == "healthy") for r in tb.servers.values()])
            for tb in list(self._runners.values())
        ]

    async def statuses(self) -> list[dict[str, Any]]:
        """Every toolbox's status from one query, whatever the number of toolboxes."""
        return [self._status(row) for row in await self.repo.listing()]

    async def statuses_json(self) -> bytes:
        """`{"items": statuses()}` encoded; unchanged statuses are not encoded again
        (status_view.ListingCache), so a listing storm costs little on the event loop."""
        rows = await self.repo.listing()
        return self._listing.encode([status_fields(r, self._runners.get(r[0])) for r in rows])

    async def tools(self, toolbox_id: str) -> dict[str, list[str]]:
        await self._existing(toolbox_id)
        return {
            server: tools for server, (_rev, tools) in (await self.repo.tools(toolbox_id)).items()
        }

    async def logs(self, toolbox_id: str, server: str, tail: int) -> str:
        tb = await self._existing(toolbox_id)
        runner = tb.servers.get(server) or tb.gate_runners.get(server)
        if runner is None:
            raise NotFound(f"toolbox {toolbox_id} has no running server {server}")
        return self.journal.redact(await self.runtime.logs(runner.container.id, tail))
