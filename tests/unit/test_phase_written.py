"""The written phase is the derived one (issue 19, "nobody pushes it"), on the engine over the
fakes on virtual time: at every event of a toolbox, its phase (memory) equals
derive_phase(its inputs), or a write of it is under way; each phase change is the derived phase
of the state at that moment; and once things settle the state DB holds the same phase.

The scenario runs what moves a phase: first apply, a crash and its restart, rollouts that pass
and fail (start_first and stop_first), a rollback, stop/start/restart, a Docker daemon
restart, the agent's own restart (recovery), a first apply that fails, a recovery that fails,
and delete."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from dtma.domain import probe as probe_reasons
from dtma.domain.phase import derive_phase
from dtma.domain.records import EventRecord
from dtma.engine import event_kinds as ev
from dtma.engine.agent import Agent
from dtma.engine.toolbox_runner import ToolboxRunner
from tests.fakes import unhealthy
from tests.unit.engine_harness import Engine, server, spec_json
from tests.virtual_time import eventually, run_virtual

WAIT = 120.0
ROOMY = {"attempts": 5, "interval": "10m", "delay": "1s"}


def _writing(tb: ToolboxRunner) -> bool:
    """A phase write is scheduled or under way (ToolboxState.sync_phase)."""
    task = tb._phase_task
    return tb._phase_lock.locked() or (task is not None and not task.done())


@dataclass
class PhaseWitness:
    """A journal observer that checks the phase at every event of every toolbox."""

    agent: Agent | None = None
    changes: dict[str, list[str]] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)

    async def observe(self, event: EventRecord) -> None:
        tb = self.agent._runners.get(event.toolbox or "") if self.agent else None
        if tb is None:
            return
        derived = derive_phase(tb.phase_inputs())[0]
        if event.kind == ev.TOOLBOX_PHASE:
            self.changes.setdefault(tb.id, []).append(event.message)
            unanswered = [
                r.name
                for r in tb.servers.values()
                if r.state == "running" and r.health != "healthy"
            ]
            if event.message.endswith("-> healthy") and unanswered:
                # Issue 19, item 4: healthy only once the endpoint can call every server.
                self.wrong.append(f"{tb.id}: healthy with {unanswered} not answering yet")
            if event.message != f"{event.message.split(' -> ')[0]} -> {derived}":
                self.wrong.append(f"{tb.id}: wrote {event.message}, derived {derived}")
        elif tb.phase != derived and not _writing(tb):
            self.wrong.append(f"{tb.id}: at {event.kind} phase {tb.phase}, derived {derived}")


async def _settled(e: Engine, agent: Agent, toolbox: str, phase: str) -> None:
    """`toolbox` reads `phase`, it is the derived one, and the state DB holds it too."""
    tb = agent._runners[toolbox]

    async def there() -> bool:
        record = await e.store.toolbox(toolbox)
        return (
            tb.phase == phase == derive_phase(tb.phase_inputs())[0]
            and not _writing(tb)
            and record is not None
            and record.phase == phase
        )

    await eventually(there, within=WAIT)


async def _apply(agent: Agent, toolbox: str, body: str) -> str:
    result = await agent.apply(toolbox, body)
    assert result.operation is not None
    return (await agent.wait(result.operation, WAIT)).state


async def _op(agent: Agent, op_id: str) -> str:
    return (await agent.wait(op_id, WAIT)).state


def test_the_written_phase_is_always_the_derived_one() -> None:
    e = Engine()
    e.prober.script("img/bad:1", unhealthy(probe_reasons.MISSING_TOOLS, "no tool"))
    witness = PhaseWitness()
    e.journal.add_observer(witness)

    def body(image: str = "img/ok:1", order: str = "start_first") -> str:
        return spec_json(server("a", image), server("b"), order=order, restart=ROOMY)

    async def main() -> None:
        agent = witness.agent = e.agent()
        await agent.start()
        assert await _apply(agent, "tb", body()) == "succeeded"  # revision 1
        await _settled(e, agent, "tb", "healthy")

        # A crash: degraded while it restarts, healthy again.
        crashed = next(c for c in e.runtime.of("tb") if c.server == "a")
        e.runtime.exit(crashed.id, 1)
        await eventually(lambda: "healthy -> degraded" in witness.changes["tb"], within=WAIT)
        await _settled(e, agent, "tb", "healthy")

        # Rollouts whose gate fails: the old revision serves on (start_first) or again.
        assert await _apply(agent, "tb", body("img/bad:1")) == "rolled_back"  # 2
        await _settled(e, agent, "tb", "healthy")
        assert await _apply(agent, "tb", body("img/bad:1", "stop_first")) == "rolled_back"  # 3
        await _settled(e, agent, "tb", "healthy")
        # One that passes, then a rollback to revision 1.
        assert await _apply(agent, "tb", body("img/ok:2")) == "succeeded"  # 4
        await _settled(e, agent, "tb", "healthy")
        assert await _op(agent, await agent.rollback("tb", 1)) == "succeeded"
        await _settled(e, agent, "tb", "healthy")

        # Stop, start, restart.
        assert await _op(agent, await agent.server_operation("tb", "stop", None)) == "succeeded"
        await _settled(e, agent, "tb", "stopped")
        assert await _op(agent, await agent.server_operation("tb", "start", None)) == "succeeded"
        await _settled(e, agent, "tb", "healthy")
        restart = await agent.server_operation("tb", "restart", ["b"])
        assert await _op(agent, restart) == "succeeded"
        await _settled(e, agent, "tb", "healthy")

        # A Docker daemon restart: the engine's return reconciles, the phase follows.
        epoch = agent.engine.epoch
        e.runtime.daemon_stops()
        await asyncio.sleep(5)
        e.runtime.daemon_starts()
        await eventually(lambda: agent.engine.epoch > epoch, within=WAIT)
        await _settled(e, agent, "tb", "healthy")

        # A first apply that fails: nothing serves.
        assert await _apply(agent, "bad", spec_json(server("a", "img/bad:1"))) == "failed"
        await _settled(e, agent, "bad", "failed")
        # One whose image is gone by the agent's restart: its recovery fails.
        assert await _apply(agent, "gone", spec_json(server("a", "img/gone:1"))) == "succeeded"
        await agent.stop()

        e.runtime.exit(e.runtime.of("gone")[0].id, 1)
        e.runtime.missing_images.add("img/gone:1")
        agent = witness.agent = e.agent()
        await agent.start()  # recovery: deploying until it ends
        await _settled(e, agent, "tb", "healthy")
        await _settled(e, agent, "bad", "failed")
        await _settled(e, agent, "gone", "failed")
        assert witness.changes["tb"][-1] == "deploying -> healthy"
        assert witness.changes["gone"][-1] == "deploying -> failed"
        phase_events = [
            x for x in e.store.event_rows if x.kind == ev.TOOLBOX_PHASE and x.toolbox == "gone"
        ]
        assert phase_events[-1].reason == "recovery_failed"

        tb = agent._runners["tb"]
        assert await _op(agent, await agent.delete("tb")) == "succeeded"
        assert tb.phase == "deleting"
        await agent.stop()

        assert witness.wrong == []
        tb_changes = witness.changes["tb"]
        for change in (
            "deploying -> healthy",
            "healthy -> degraded",
            "degraded -> healthy",
            "healthy -> deploying",
            "healthy -> stopped",
            "stopped -> degraded",  # started: not serving until each server's probe answers
            "healthy -> deleting",
        ):
            assert change in tb_changes, (change, tb_changes)
        assert "deploying -> failed" in witness.changes["bad"]

    run_virtual(main)


def test_the_witness_sees_a_phase_that_is_not_the_derived_one() -> None:
    """The check above can fail: a phase written by hand (what the scan in test_one_writer.py
    forbids in dtma/) is caught at the next event."""
    e = Engine()
    witness = PhaseWitness()
    e.journal.add_observer(witness)

    async def main() -> None:
        agent = witness.agent = e.agent()
        await agent.start()
        assert await _apply(agent, "tb", spec_json(server("a"))) == "succeeded"
        await _settled(e, agent, "tb", "healthy")
        tb = agent._runners["tb"]
        tb.phase = "degraded"  # a push, as the call sites did before issue 19
        await tb.emit(ev.SERVER_STOPPED, server="a")
        assert witness.wrong == ["tb: at server_stopped phase degraded, derived healthy"]
        await agent.stop()

    run_virtual(main)


def test_a_failed_rollback_with_nothing_serving_reads_failed_with_its_reason() -> None:
    """Only an apply is superseded by a newer apply: a rollback (of an older revision than the
    newest applied) that fails with nothing serving ends `failed`, not `deploying` for good
    (a review found it); the phase's event carries the rollout's error."""
    e = Engine()
    e.prober.script("img/bad:1", unhealthy(probe_reasons.MISSING_TOOLS, "no tool"))
    witness = PhaseWitness()
    e.journal.add_observer(witness)

    async def main() -> None:
        agent = witness.agent = e.agent()
        await agent.start()
        bad = spec_json(server("a", "img/bad:1"))
        assert await _apply(agent, "tb", bad) == "failed"  # revision 1
        assert await _apply(agent, "tb", spec_json(server("a", "img/bad:1"), server("b"))) == (
            "failed"
        )  # revision 2: the newest applied
        await _settled(e, agent, "tb", "failed")
        assert await _op(agent, await agent.rollback("tb", 1)) == "failed"
        await _settled(e, agent, "tb", "failed")
        await asyncio.sleep(30)  # nothing moves it afterwards
        await _settled(e, agent, "tb", "failed")
        failed = [
            x
            for x in e.store.event_rows
            if x.kind == ev.TOOLBOX_PHASE and x.toolbox == "tb" and x.message.endswith("failed")
        ]
        assert failed
        assert all("missing_tools" in (x.reason or "") for x in failed), failed
        assert witness.wrong == []
        await agent.stop()

    run_virtual(main)
