"""The engine wired to the fakes (tests/fakes.py), for unit tests of its decisions.

Run a scenario with run_virtual (tests/virtual_time.py): the engine's sleeps are virtual, so a
gate of several seconds takes milliseconds. The types below are the ports, so mypy checks that
each fake implements its port.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field
from typing import Any

from dtma.domain.records import OperationRecord
from dtma.engine.agent import Agent
from dtma.engine.engine_watch import EngineWatch
from dtma.engine.journal import Journal
from dtma.engine.rollout import run_rollout
from dtma.engine.secrets import SecretInjector
from dtma.engine.supervisor import Supervisor
from dtma.engine.toolbox_runner import ToolboxRunner
from dtma.observability.redaction import Redactor
from dtma.ports import ContainerRuntime, ProbeFactory, SecretFiles, SecretSource, StateStore
from dtma.spec.hashing import canonical_json, spec_hash
from dtma.spec.models import ToolboxSpec
from dtma.spec.validate import SpecPolicy
from tests.fake_store import FakeStore
from tests.fakes import (
    FakeEnginePing,
    FakeProber,
    FakeRuntime,
    FakeSecretFiles,
    FakeSecretSource,
)

TOOLS = ["get_current_time"]


def server(name: str, image: str = "img/ok:1", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "transport": "stdio",
        "health": {"expect_tools": TOOLS, "interval": "1s", "timeout": "1s"},
        **extra,
    }


def spec_json(
    *servers: dict[str, Any],
    order: str = "start_first",
    auto_revert: bool = True,
    min_healthy: str = "1s",
    deadline: str = "5s",
    **extra: Any,
) -> str:
    rollout = {
        "order": order,
        "min_healthy_time": min_healthy,
        "healthy_deadline": deadline,
        "auto_revert": auto_revert,
    }
    return json.dumps({"servers": list(servers), "rollout": rollout, **extra})


@dataclass
class Engine:
    """Fakes plus the real engine objects over them."""

    runtime: FakeRuntime = field(default_factory=FakeRuntime)
    store: FakeStore = field(default_factory=FakeStore)
    vault: FakeSecretSource = field(default_factory=FakeSecretSource)
    files: FakeSecretFiles = field(default_factory=FakeSecretFiles)
    ping: FakeEnginePing = field(init=False)
    prober: FakeProber = field(init=False)
    engine: EngineWatch = field(init=False)
    supervisor: Supervisor = field(init=False)
    journal: Journal = field(init=False)
    secrets: SecretInjector = field(init=False)

    def __post_init__(self) -> None:
        self.prober = FakeProber(self.runtime)
        self.ping = FakeEnginePing(runtime=self.runtime)
        self.engine = EngineWatch(self.ping)
        self.supervisor = Supervisor()
        self.journal = Journal(self.store)
        vault: SecretSource = self.vault
        files: SecretFiles = self.files
        self.secrets = SecretInjector(vault, files, Redactor(), b"k" * 32)

    def clock(self) -> float:
        return asyncio.get_running_loop().time()

    def toolbox(self, toolbox_id: str = "tb") -> ToolboxRunner:
        runtime: ContainerRuntime = self.runtime
        probes: ProbeFactory = self.prober
        return ToolboxRunner(
            toolbox_id,
            runtime=runtime,
            repo=self.store,
            journal=self.journal,
            probe_factory=probes,
            clock=self.clock,
            rng=random.Random(7),
            secrets=self.secrets,
            supervisor=self.supervisor,
            engine=self.engine,
        )

    def agent(self, **kwargs: Any) -> Agent:
        runtime: ContainerRuntime = self.runtime
        store: StateStore = self.store
        return Agent(
            runtime=runtime,
            repo=store,
            journal=self.journal,
            probe_factory=self.prober,
            policy=SpecPolicy(vault_configured=True),
            engine=self.engine,
            supervisor=self.supervisor,
            clock=self.clock,
            rng=random.Random(7),
            events_source=self.runtime.events,
            secrets=self.secrets,
            agent_id=self.runtime.agent_id,
            **kwargs,
        )

    async def apply(self, tb: ToolboxRunner, body: str, *, is_rollback: bool = False) -> str:
        """Store `body` as a new revision and roll `tb` to it through run_operation, as the
        Agent does. Returns the operation's final state."""
        spec = ToolboxSpec.model_validate_json(body)
        rev, _ = await self.store.add_revision(tb.id, canonical_json(spec), spec_hash(spec))
        return await self.rollout(tb, rev.number, is_rollback=is_rollback)

    async def rollout(self, tb: ToolboxRunner, revision: int, *, is_rollback: bool = False) -> str:
        op = await self.store.add_operation(
            f"op-{len(self.store.operation_rows) + 1}", "apply", tb.id, revision
        )
        if not is_rollback:
            tb.wanted_revision = revision
        return await tb.run_operation(
            op.id,
            lambda: run_rollout(tb, revision, op.id, is_rollback=is_rollback),
            revision,
            supersedable=not is_rollback,
        )

    def last_operation(self) -> OperationRecord:
        return list(self.store.operation_rows.values())[-1]

    def serving(self, tb: ToolboxRunner) -> dict[str, int]:
        """server -> revision of the runners `tb` serves with."""
        return {name: r.revision for name, r in tb.servers.items()}

    def live(self, toolbox: str = "tb") -> dict[str, int]:
        """server -> revision of the running containers (fails on two of one server)."""
        seen: dict[str, int] = {}
        for c in self.runtime.of(toolbox):
            if c.running:
                assert c.server not in seen, f"two running containers of {c.server}"
                seen[c.server] = c.revision
        return seen


async def start_settled(agent: Agent) -> None:
    """agent.start() (what /v1/ready waits for: every toolbox reconciled with the engine), then
    the start-up recoveries it left running: their wait for the adopted servers' first answers
    (engine/recovery.py)."""
    await agent.start()
    await asyncio.gather(*list(agent._tasks))
