"""Recovery after an agent restart (engine/recovery.py through Agent.start), over the fakes on
virtual time: a second Agent on the same fake engine and store is the restarted agent."""

from __future__ import annotations

import pytest

from dtma.domain import probe as probe_reasons
from dtma.domain.probe import ProbeResult
from dtma.engine import event_kinds as ev
from dtma.engine.agent import Agent
from dtma.spec.hashing import canonical_json, spec_hash
from dtma.spec.models import ToolboxSpec
from tests.fakes import unhealthy
from tests.unit.engine_harness import Engine, server, spec_json, start_settled
from tests.virtual_time import run_virtual

WAIT = 120.0


async def _deployed(e: Engine, bodies: dict[str, str]) -> None:
    """Run a first agent that deploys `bodies`, then stop it (its containers keep running)."""
    agent = e.agent()
    await agent.start()
    for toolbox, body in bodies.items():
        result = await agent.apply(toolbox, body)
        assert result.operation is not None
        assert (await agent.wait(result.operation, WAIT)).state == "succeeded"
    await agent.stop()


async def _restarted(e: Engine) -> Agent:
    agent = e.agent()
    await start_settled(agent)
    return agent


def test_the_agent_is_ready_before_its_adopted_servers_answer_and_reads_deploying_until() -> None:
    """Agent.start (what /v1/ready waits for) returns once every toolbox is reconciled with the
    engine, not once each adopted server has answered its first probe: until then the toolbox
    reads `deploying`, then `healthy`, never `degraded` (issue 19, item 4)."""
    e = Engine()

    async def main() -> None:
        await _deployed(e, {"tb": spec_json(server("a"))})
        e.prober.script("a", unhealthy(probe_reasons.TIMEOUT, "slow"), ProbeResult.ok(1.0))
        seen = len(e.store.event_rows)
        agent = e.agent()
        await agent.start()
        assert (await agent.status("tb"))["phase"] == "deploying"
        await start_settled(agent)  # started already: waits for the recovery's end
        assert (await agent.status("tb"))["phase"] == "healthy"
        moves = [x.message for x in e.store.event_rows[seen:] if x.kind == ev.TOOLBOX_PHASE]
        assert moves[-2:] == ["healthy -> deploying", "deploying -> healthy"], moves
        assert not [m for m in moves if "degraded" in m], moves
        await agent.stop()

    run_virtual(main)


def test_running_containers_are_adopted_without_a_restart() -> None:
    e = Engine()

    async def main() -> None:
        await _deployed(e, {"tb": spec_json(server("a"), server("b"))})
        before, created = {c.id for c in e.runtime.of("tb")}, e.runtime.created
        agent = await _restarted(e)
        assert {c.id for c in e.runtime.of("tb")} == before
        assert e.runtime.created == created
        status = await agent.status("tb")
        assert status["phase"] == "healthy"
        assert [s["restarts"] for s in status["servers"]] == [0, 0]
        assert e.store.kinds("tb").count(ev.CONTAINER_ADOPTED) == 2
        await agent.stop()

    run_virtual(main)


def test_secret_files_whose_container_is_gone_are_swept_before_recovery() -> None:
    """A kill -9 between removing a container and its secret files leaves the files behind:
    the next start removes them at once (nothing is being created yet), not a grace period
    later, and keeps those of every container that still exists."""
    e = Engine()

    async def main() -> None:
        await _deployed(e, {"tb": spec_json(server("a"))})
        live = next(c for c in e.runtime.of("tb"))
        e.files.dirs[live.name] = {"K": "v"}
        e.files.dirs["dtma-tb-a-r0-dead"] = {"K": "old"}
        agent = await _restarted(e)
        assert set(e.files.dirs) == {live.name}
        assert e.files.sweep_ages[0] == 0
        await agent.stop()

    run_virtual(main)


def test_an_exited_container_is_recreated_and_counted_as_a_restart() -> None:
    e = Engine()

    async def main() -> None:
        await _deployed(e, {"tb": spec_json(server("a"), server("b"))})
        crashed = next(c for c in e.runtime.of("tb") if c.server == "a")
        e.runtime.exit(crashed.id, 137)
        agent = await _restarted(e)
        assert crashed.id not in e.runtime.containers
        assert e.live() == {"a": 1, "b": 1}
        status = await agent.status("tb")
        restarts = {s["name"]: s["restarts"] for s in status["servers"]}
        assert restarts == {"a": 1, "b": 0}
        assert status["phase"] == "healthy"
        await agent.stop()

    run_virtual(main)


def test_a_missing_image_fails_that_toolbox_only_and_it_can_be_deleted() -> None:
    e = Engine()

    async def main() -> None:
        await _deployed(
            e,
            {
                "broken": spec_json(server("a", "img/gone:1")),
                "fine": spec_json(server("a")),
            },
        )
        e.runtime.exit(e.runtime.of("broken")[0].id, 1)
        e.runtime.missing_images.add("img/gone:1")
        agent = await _restarted(e)  # returns: one broken toolbox does not block the agent
        broken = await agent.status("broken")
        assert broken["phase"] == "failed"
        failed = [x for x in e.store.event_rows if x.kind == ev.RECOVERY_FAILED]
        assert [x.toolbox for x in failed] == ["broken"]
        assert "img/gone:1" in failed[0].message
        assert (await agent.status("fine"))["phase"] == "healthy"
        assert e.live("fine") == {"a": 1}
        deleting = await agent.delete("broken")
        assert (await agent.wait(deleting, WAIT)).state == "succeeded"
        assert e.runtime.of("broken") == []
        await agent.stop()

    run_virtual(main)


@pytest.mark.parametrize("healthy", [True, False])
def test_an_interrupted_rollout_is_kept_only_if_its_revision_passes_the_gate(healthy: bool) -> None:
    e = Engine()
    if not healthy:
        e.prober.script("img/v2:1", unhealthy("missing_tools", "no tool"))

    async def main() -> None:
        await _deployed(e, {"tb": spec_json(server("a"))})
        # The agent died in the gate of revision 2: target set, rev-2 container running,
        # the operation still running.
        body = spec_json(server("a", "img/v2:1"))
        spec = ToolboxSpec.model_validate_json(body)
        rev, _ = await e.store.add_revision("tb", canonical_json(spec), spec_hash(spec))
        op = await e.store.add_operation("op-x", "apply", "tb", rev.number)
        tb = e.toolbox()
        await tb.create_container(spec.servers[0], rev.number, spec)
        agent = await _restarted(e)
        record = await e.store.toolbox("tb")
        assert record is not None
        finished = await e.store.operation(op.id)
        assert finished is not None
        if healthy:
            assert e.live() == {"a": 2}
            assert (record.stable_revision, finished.state) == (2, "succeeded")
        else:
            assert e.live() == {"a": 1}
            assert (record.stable_revision, finished.state) == (1, "rolled_back")
        assert record.target_revision is None
        assert len(e.runtime.of("tb")) == 1  # no orphan either way
        await agent.stop()

    run_virtual(main)
