"""The rollout's decisions, through ToolboxRunner.run_operation and engine/rollout.run_rollout,
over the fakes on virtual time (no Docker; each test takes milliseconds)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from dtma.domain import gate as gate_reasons
from dtma.domain import probe as probe_reasons
from dtma.engine import event_kinds as ev
from tests.fakes import FakeRuntime, unhealthy
from tests.unit.engine_harness import Engine, server, spec_json
from tests.virtual_time import eventually, run_virtual


def test_gate_pass_commits_the_revision_and_marks_it_stable() -> None:
    e = Engine()

    async def main() -> None:
        tb = e.toolbox()
        assert await e.apply(tb, spec_json(server("a"), server("b"))) == "succeeded"
        assert e.serving(tb) == {"a": 1, "b": 1}
        assert e.live() == {"a": 1, "b": 1}
        assert tb.phase == "healthy"
        record = await e.store.toolbox("tb")
        assert record is not None
        assert (record.current_revision, record.stable_revision, record.target_revision) == (
            1,
            1,
            None,
        )
        assert ev.ROLLOUT_PASSED in e.store.kinds()
        await tb.halt()

    run_virtual(main)


def _ids(e: Engine, revision: int) -> set[str]:
    return {c.id for c in e.runtime.of("tb", revision=revision)}


def test_gate_fail_start_first_keeps_the_old_revision_serving_and_removes_the_new() -> None:
    e = Engine()
    e.prober.script("img/bad:1", unhealthy(probe_reasons.MISSING_TOOLS, "no tool"))

    async def main() -> None:
        tb = e.toolbox()
        await e.apply(tb, spec_json(server("a"), server("b")))
        old = _ids(e, 1)
        state = await e.apply(tb, spec_json(server("a", "img/bad:1"), server("b")))
        assert state == "rolled_back"
        assert e.last_operation().error is not None
        assert "missing_tools" in (e.last_operation().error or "")
        assert _ids(e, 1) == old  # never stopped, never replaced
        assert not e.runtime.of("tb", revision=2)
        assert e.live() == {"a": 1, "b": 1}
        assert e.serving(tb) == {"a": 1, "b": 1}
        assert tb.phase == "healthy"
        record = await e.store.toolbox("tb")
        assert record is not None
        assert (record.current_revision, record.target_revision) == (1, None)
        assert ev.ROLLOUT_FAILED in e.store.kinds()
        await tb.halt()

    run_virtual(main)


def test_stop_first_failure_restarts_the_old_revision_and_gates_it() -> None:
    e = Engine()
    e.prober.script("img/bad:1", unhealthy(probe_reasons.MISSING_TOOLS, "no tool"))

    async def main() -> None:
        tb = e.toolbox()
        await e.apply(tb, spec_json(server("a"), order="stop_first"))
        state = await e.apply(tb, spec_json(server("a", "img/bad:1"), order="stop_first"))
        assert state == "rolled_back"
        assert e.live() == {"a": 1}
        assert e.serving(tb) == {"a": 1}
        assert tb.servers["a"].state == "running"
        assert not e.runtime.of("tb", revision=2)
        assert tb.phase == "healthy"
        kinds = e.store.kinds()
        stopped_at = kinds.index(ev.SERVER_STOPPED)
        assert stopped_at < kinds.index(ev.ROLLOUT_FAILED) < kinds.index(ev.ROLLBACK_PASSED)
        reverts = [x for x in e.store.event_rows if x.kind == ev.ROLLBACK_STARTED]
        assert [x.reason for x in reverts] == ["stop_first_revert"]
        await tb.halt()

    run_virtual(main)


def test_auto_revert_false_fails_the_operation_and_leaves_the_old_revision() -> None:
    e = Engine()
    e.prober.script("img/bad:1", unhealthy(probe_reasons.MISSING_TOOLS, "no tool"))

    async def main() -> None:
        tb = e.toolbox()
        await e.apply(tb, spec_json(server("a"), auto_revert=False))
        state = await e.apply(tb, spec_json(server("a", "img/bad:1"), auto_revert=False))
        assert state == "failed"
        assert e.live() == {"a": 1}
        assert not e.runtime.of("tb", revision=2)
        await tb.halt()

    run_virtual(main)


def test_a_rollback_that_fails_is_never_rolled_back() -> None:
    e = Engine()

    async def main() -> None:
        tb = e.toolbox()
        await e.apply(tb, spec_json(server("a")))
        await e.apply(tb, spec_json(server("a", "img/v2:1")))
        assert e.serving(tb) == {"a": 2}
        e.prober.script("a@1", unhealthy(probe_reasons.MISSING_TOOLS, "gone"))
        state = await e.rollout(tb, 1, is_rollback=True)
        assert state == "failed"  # not rolled_back: nothing reverts a rollback
        assert e.live() == {"a": 2}
        assert e.serving(tb) == {"a": 2}
        kinds = e.store.kinds()
        assert kinds.count(ev.ROLLBACK_STARTED) == 1
        assert kinds[kinds.index(ev.ROLLBACK_FAILED) :].count(ev.ROLLOUT_STARTED) == 0
        record = await e.store.toolbox("tb")
        assert record is not None
        assert record.stable_revision == 2
        await tb.halt()

    run_virtual(main)


def test_a_first_apply_that_fails_ends_failed_with_nothing_left() -> None:
    e = Engine()
    e.prober.script("img/bad:1", unhealthy(probe_reasons.MISSING_TOOLS, "no tool"))

    async def main() -> None:
        tb = e.toolbox()
        state = await e.apply(tb, spec_json(server("a"), server("b", "img/bad:1")))
        assert state == "failed"
        assert e.runtime.of("tb") == []
        assert tb.servers == {}
        assert tb.phase == "failed"
        record = await e.store.toolbox("tb")
        assert record is not None
        assert (record.phase, record.current_revision, record.target_revision) == (
            "failed",
            None,
            None,
        )

    run_virtual(main)


def test_the_deadline_fails_a_server_that_never_answers() -> None:
    e = Engine()
    e.prober.script("img/slow:1", unhealthy())  # connection refused until the deadline

    async def main() -> None:
        tb = e.toolbox()
        await e.apply(tb, spec_json(server("a")))
        start = e.clock()
        state = await e.apply(tb, spec_json(server("a", "img/slow:1"), deadline="7s"))
        assert state == "rolled_back"
        assert 7 <= e.clock() - start < 9
        assert gate_reasons.DEADLINE_EXCEEDED in (e.last_operation().error or "")
        assert e.live() == {"a": 1}
        await tb.halt()

    run_virtual(main)


def test_a_crash_in_the_gate_fails_it_at_once() -> None:
    e = Engine()

    async def main() -> None:
        tb = e.toolbox()
        await e.apply(tb, spec_json(server("a")))

        async def crash_new() -> None:
            await eventually(lambda: bool(e.runtime.of("tb", revision=2)))
            new = e.runtime.of("tb", revision=2)[0]
            e.runtime.output[new.id] = "boom: cannot bind"
            e.runtime.exit(new.id, 3)

        crasher = asyncio.create_task(crash_new())
        start = e.clock()
        state = await e.apply(tb, spec_json(server("a", "img/v2:1"), min_healthy="3s"))
        await crasher
        assert state == "rolled_back"
        assert e.clock() - start < 3  # at once, not at min_healthy_time or the deadline
        error = e.last_operation().error or ""
        assert gate_reasons.CONTAINER_EXITED in error
        assert "boom: cannot bind" in error
        assert e.live() == {"a": 1}
        await tb.halt()

    run_virtual(main)


def _gone(e: Engine, container_id: str) -> Callable[[], bool]:
    return lambda: container_id not in e.runtime.containers


class _StopFails(FakeRuntime):
    """A runtime whose stop() raises for the servers in `fail_stop` (they keep running)."""

    fail_stop: frozenset[str] = frozenset()

    async def stop(self, container_id: str, timeout: int = 10) -> None:
        if self.containers[container_id].server in self.fail_stop:
            raise OSError("stop broke")
        await super().stop(container_id, timeout)


@pytest.mark.parametrize("failing", [("a",), ("b",)])
def test_a_stop_first_stop_that_raises_leaves_every_old_server_supervised_once(
    failing: tuple[str, ...],
) -> None:
    runtime = _StopFails()
    e = Engine(runtime=runtime)

    async def main() -> None:
        tb = e.toolbox()
        await e.apply(tb, spec_json(server("a"), server("b"), order="stop_first"))
        runtime.fail_stop = frozenset(failing)
        new = spec_json(server("a", "img/v2:1"), server("b", "img/v2:1"), order="stop_first")
        assert await e.apply(tb, new) == "failed"
        assert "OSError" in (e.last_operation().error or "")
        assert e.live() == {"a": 1, "b": 1}
        assert not e.runtime.of("tb", revision=2)
        assert tb.phase == "healthy"
        # Every old server is supervised, by one runner: a crash is restarted exactly once,
        # not left behind a "healthy" phase, and no second runner makes a second container.
        for name in ("a", "b"):
            crashed = next(c for c in e.runtime.of("tb") if c.server == name)
            e.runtime.exit(crashed.id, 1)
            tb.on_container_exit(crashed.id, 1)
            await eventually(_gone(e, crashed.id))
        created = e.runtime.created
        await asyncio.sleep(60)  # long enough for any stray runner to act
        assert e.live() == {"a": 1, "b": 1}
        assert len(e.runtime.of("tb")) == 2
        assert e.runtime.created == created
        await tb.halt()

    run_virtual(main)
