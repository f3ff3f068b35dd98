"""The Agent facade's decisions over the fakes on virtual time: last write wins, delete then
put, and an exception inside an operation (milliseconds each, no Docker)."""

from __future__ import annotations

import pytest

from dtma.domain import gate as gate_reasons
from dtma.engine.agent import Agent
from dtma.errors import Conflict, DockerError
from tests.fakes import unhealthy
from tests.unit.engine_harness import Engine, server, spec_json
from tests.virtual_time import eventually, run_virtual

WAIT = 120.0


async def _apply(agent: Agent, body: str, toolbox: str = "tb") -> tuple[int, str]:
    """Apply and wait; (revision, final operation state)."""
    result = await agent.apply(toolbox, body)
    assert result.operation is not None
    return result.revision, (await agent.wait(result.operation, WAIT)).state


def test_a_newer_apply_supersedes_one_in_its_gate() -> None:
    e = Engine()
    e.prober.script("img/slow:1", unhealthy())  # never ready: its gate would hold to the deadline

    async def main() -> None:
        agent = e.agent()
        await agent.start()
        assert await _apply(agent, spec_json(server("a"))) == (1, "succeeded")
        slow = await agent.apply("tb", spec_json(server("a", "img/slow:1"), deadline="60s"))
        await eventually(lambda: bool(e.runtime.of("tb", revision=2)))
        start = e.clock()
        assert await _apply(agent, spec_json(server("a", "img/v3:1"))) == (3, "succeeded")
        assert e.clock() - start < 10  # the newer one did not wait out the old one's deadline
        assert slow.operation is not None
        superseded = await agent.wait(slow.operation, WAIT)
        assert superseded.state == "failed"
        assert gate_reasons.SUPERSEDED in (superseded.error or "")
        assert e.live() == {"a": 3}
        status = await agent.status("tb")
        assert (status["revision"], status["stable_revision"], status["phase"]) == (3, 3, "healthy")
        await agent.stop()

    run_virtual(main)


def test_re_applying_the_serving_spec_during_a_rollout_wins() -> None:
    e = Engine()
    e.prober.script("img/slow:1", unhealthy())
    first = spec_json(server("a"))

    async def main() -> None:
        agent = e.agent()
        await agent.start()
        assert await _apply(agent, first) == (1, "succeeded")
        await agent.apply("tb", spec_json(server("a", "img/slow:1"), deadline="60s"))
        await eventually(lambda: bool(e.runtime.of("tb", revision=2)))
        again = await agent.apply("tb", first)
        assert not again.unchanged  # not "unchanged": the last write is the serving spec
        assert again.operation is not None
        assert (await agent.wait(again.operation, WAIT)).state == "succeeded"
        assert e.live() == {"a": again.revision}
        assert e.runtime.requests[e.runtime.of("tb")[0].id].image == "img/ok:1"
        await agent.stop()

    run_virtual(main)


def test_a_put_right_after_a_delete_is_refused_or_runs_on_a_fresh_toolbox() -> None:
    e = Engine()
    body = spec_json(server("a"))

    async def main() -> None:
        agent = e.agent()
        await agent.start()
        await _apply(agent, body)
        deleting = await agent.delete("tb")
        refused: list[str] = []
        try:
            result = await agent.apply("tb", body)
        except Conflict as exc:
            refused.append(exc.message)
            result = None
        assert all("being deleted" in m for m in refused)
        assert (await agent.wait(deleting, WAIT)).state == "succeeded"
        if result is not None:  # the delete finished first: a fresh toolbox, not a lost apply
            assert result.operation is not None
            assert (await agent.wait(result.operation, WAIT)).state == "succeeded"
        else:
            assert e.runtime.of("tb") == []
            assert await e.store.toolbox("tb") is None
            assert await _apply(agent, body) == (1, "succeeded")  # fresh: revision 1 again
        assert e.live() == {"a": 1}
        assert (await agent.status("tb"))["phase"] == "healthy"
        await agent.stop()

    run_virtual(main)


def test_an_apply_queued_behind_a_delete_is_refused() -> None:
    e = Engine()
    e.prober.script("img/slow:1", unhealthy())
    body = spec_json(server("a"))

    async def main() -> None:
        agent = e.agent()
        await agent.start()
        await _apply(agent, body)
        # A rollout holds the toolbox's lock, so the delete queues behind it...
        await agent.apply("tb", spec_json(server("a", "img/slow:1"), deadline="30s"))
        deleting = await agent.delete("tb")
        # ...and an apply behind the delete is refused, not accepted and then lost.
        with pytest.raises(Conflict):
            await agent.apply("tb", spec_json(server("a", "img/v3:1")))
        assert (await agent.wait(deleting, WAIT)).state == "succeeded"
        assert e.runtime.of("tb") == []
        assert "tb" not in e.runtime.networks
        await agent.stop()

    run_virtual(main)


@pytest.mark.parametrize("where", ["create", "secret_files"])
def test_an_exception_in_a_first_apply_ends_it_failed_with_nothing_left(where: str) -> None:
    e = Engine()
    e.vault.values[("secret", "app", "token")] = "s3cr3t-value"
    secret = {"name": "TOKEN", "vault": {"mount": "secret", "path": "app", "key": "token"}}
    body = spec_json(server("a", secrets=[secret]), server("b"))

    async def main() -> None:
        if where == "create":
            e.runtime.create_fails["a"] = OSError("no space left on device")
        else:
            e.files.fail_with = OSError("read-only file system")
        agent = e.agent()
        await agent.start()
        revision, state = await _apply(agent, body)
        assert state == "failed"
        op = e.last_operation()
        assert "OSError" in (op.error or "")
        assert e.runtime.of("tb") == []  # b started, and was removed again
        assert e.files.dirs == {}
        status = await agent.status("tb")
        assert status["phase"] == "failed"
        record = await e.store.toolbox("tb")
        assert record is not None
        assert record.target_revision is None
        assert all("s3cr3t-value" not in x.message for x in e.store.event_rows)
        # Not a silent no-op: the same spec again is a new revision, and it deploys.
        e.runtime.create_fails.clear()
        e.files.fail_with = None
        assert await _apply(agent, body) == (revision + 1, "succeeded")
        assert e.live() == {"a": revision + 1, "b": revision + 1}
        await agent.stop()

    run_virtual(main)


def test_an_exception_in_a_later_apply_leaves_the_old_revision_serving() -> None:
    e = Engine()

    async def main() -> None:
        agent = e.agent()
        await agent.start()
        await _apply(agent, spec_json(server("a"), server("b")))
        old = {c.id for c in e.runtime.of("tb")}
        e.runtime.create_fails["b"] = OSError("no space left on device")
        _, state = await _apply(agent, spec_json(server("a", "img/v2:1"), server("b", "img/v2:1")))
        assert state == "rolled_back"
        assert {c.id for c in e.runtime.of("tb")} == old
        status = await agent.status("tb")
        assert (status["stable_revision"], status["phase"]) == (1, "healthy")
        assert [(s["revision"], s["state"]) for s in status["servers"]] == [(1, "running")] * 2
        await agent.stop()

    run_virtual(main)


def test_a_rollback_to_the_serving_revision_does_nothing() -> None:
    """Its containers are the serving ones: a gate over a copy that failed would remove both.
    It succeeds at once and leaves them alone, even when the copy's creates would fail."""
    e = Engine()

    async def main() -> None:
        agent = e.agent()
        await agent.start()
        assert await _apply(agent, spec_json(server("a"))) == (1, "succeeded")
        serving = {c.id for c in e.runtime.of("tb")}
        e.runtime.create_fails["a"] = DockerError("no space left on device")
        op = await agent.rollback("tb", 1)
        assert (await agent.wait(op, WAIT)).state == "succeeded"
        assert {c.id for c in e.runtime.of("tb")} == serving
        assert (await agent.status("tb"))["phase"] == "healthy"
        await agent.stop()

    run_virtual(main)


def test_a_failed_rollback_of_a_stopped_toolbox_to_its_revision_keeps_its_containers() -> None:
    """Stopped, the rollback does run (it starts the revision again); its failed gate removes
    the copies it started, never the stopped containers of the same revision."""
    e = Engine()

    async def main() -> None:
        agent = e.agent()
        await agent.start()
        assert await _apply(agent, spec_json(server("a"))) == (1, "succeeded")
        stopped = {c.id for c in e.runtime.of("tb")}
        op = await agent.server_operation("tb", "stop", None)
        assert (await agent.wait(op, WAIT)).state == "succeeded"
        e.runtime.create_fails["a"] = DockerError("no space left on device")
        op = await agent.rollback("tb", 1)
        assert (await agent.wait(op, WAIT)).state == "failed"
        assert {c.id for c in e.runtime.of("tb")} == stopped
        await agent.stop()

    run_virtual(main)


def test_a_restart_whose_create_fails_leaves_the_server_failed_not_healthy() -> None:
    e = Engine()

    async def main() -> None:
        agent = e.agent()
        await agent.start()
        assert await _apply(agent, spec_json(server("a"), server("b"))) == (1, "succeeded")
        e.runtime.create_fails["a"] = DockerError("no space left on device")
        op = await agent.server_operation("tb", "restart", ["a"])
        assert (await agent.wait(op, WAIT)).state == "failed"
        status = await agent.status("tb")
        states = {s["name"]: (s["state"], s["restarts"]) for s in status["servers"]}
        assert states == {"a": ("failed", 1), "b": ("running", 0)}
        assert status["phase"] == "degraded"
        await agent.stop()

    run_virtual(main)
