"""Every background task of the engine goes through the supervisor (engine/supervisor.py):
a toolbox's phase write that fails is logged, counted, reported down and retried; a one-shot
task that fails is logged and counted, never left unretrieved."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from dtma.engine.supervisor import Supervisor, watch_task
from dtma.observability.metrics import METRICS
from tests.fake_store import FailingStore
from tests.unit.engine_harness import Engine, server, spec_json
from tests.virtual_time import eventually, run_virtual

REPO = Path(__file__).resolve().parents[2]


def _failures(kind: str) -> float:
    return float(METRICS.task_failures.labels(kind)._value.get())


def test_a_failed_phase_write_is_counted_reported_and_retried() -> None:
    store = FailingStore()
    e = Engine(store=store)

    async def main() -> None:
        tb = e.toolbox()
        assert await e.apply(tb, spec_json(server("a"))) == "succeeded"
        before = _failures("phase")
        store.fail_updates = 2
        e.runtime.exit(e.runtime.of("tb")[0].id, 1)
        tb.on_container_exit(e.runtime.of("tb")[0].id, 1)
        await eventually(lambda: bool(tb.supervisor.down()))
        assert "phase tb failed (OSError)" in tb.supervisor.down()[0]
        assert _failures("phase") >= before + 1
        # Once the store answers again, the phase in the store catches up with the runner's.
        await eventually(lambda: store.fail_updates == 0 and not tb.supervisor.down(), 120)

        async def consistent() -> bool:
            record = await store.toolbox("tb")
            return record is not None and record.phase == tb.phase

        await eventually(consistent, 120)
        await tb.halt()
        await tb.supervisor.stop()

    run_virtual(main)


async def test_a_one_shot_task_that_fails_is_logged_and_counted() -> None:
    before = _failures("test-oneshot")

    async def boom() -> None:
        raise OSError("boom")

    task = asyncio.create_task(boom())
    watch_task(task, "oneshot", "test-oneshot")
    with pytest.raises(OSError, match="boom"):
        await task
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert _failures("test-oneshot") == before + 1


async def test_a_cancelled_one_shot_task_is_not_a_failure() -> None:
    before = _failures("test-oneshot-cancel")
    task = asyncio.create_task(asyncio.Event().wait())
    watch_task(task, "oneshot", "test-oneshot-cancel")
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert _failures("test-oneshot-cancel") == before


async def test_spawned_tasks_are_held_and_stopped() -> None:
    sup = Supervisor()

    async def forever() -> None:
        await asyncio.Event().wait()

    task = sup.spawn("forever", "test-spawn", forever)
    await asyncio.sleep(0)
    await sup.stop()
    assert task.cancelled()


def test_every_task_the_engine_and_api_create_is_supervised_or_watched() -> None:
    """create_task/ensure_future in dtma/engine and dtma/api: each call site is supervised
    (Supervisor.run/spawn), watched (watch_task), or a child task its creator awaits."""
    awaited_children = {
        # one engine ping shared by its callers: each awaits it (shielded), none outlives them
        ("engine_watch.py", "self._ping_once("),
        # the gate's probe loops: hold_gate re-raises a crashed one and cancels them on return
        ("gating.py", "probe_loop()"),
        # a stdio session: its end is seen (and reported) by the next probe; close() awaits it
        ("probes.py", "self._stdio.run("),
        # recovery's per-toolbox tasks: awaited by recover_all; the slow ones are watched
        ("recovery.py", "one(r)"),
        # a tool call (or prompts/resources request): awaited by _guarded, cut by the exit
        ("server_runner.py", "asyncio.create_task(start())"),
        # a shielded API handler: awaited by the middleware; watched once its client has gone
        ("disconnects.py", "asyncio.create_task(handling)"),
        # the SDK's ASGI app: awaited to its end by the handler, even once its client has gone
        ("asgi.py", "asyncio.ensure_future(running)"),
    }
    unexplained = []
    scanned = [
        *REPO.glob("dtma/engine/*.py"),
        *REPO.glob("dtma/api/*.py"),
        *REPO.glob("dtma/gateway/*.py"),
        REPO / "dtma/bootstrap.py",
    ]
    for path in sorted(scanned):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if not re.search(r"\b(create_task|ensure_future)\(", line) or "def " in line:
                continue
            window = "\n".join(lines[i : i + 4])
            if "supervisor.run(" in window or "self.run(" in window:
                continue
            if "watch_task(" in window:
                continue
            if any(path.name == f and snippet in window for f, snippet in awaited_children):
                continue
            unexplained.append(f"{path.relative_to(REPO)}:{i + 1}: {line.strip()}")
    assert unexplained == []
