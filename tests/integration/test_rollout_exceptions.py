"""Any exception in a rollout ends the operation `failed` with the phase and containers
consistent: nothing of the new revision is left running untracked, the old revision keeps
serving, and re-applying the same spec runs again (it is not a silent no-op)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

import pytest

from dtma.adapters.docker_runtime import DockerRuntime
from dtma.domain.containers import LABEL_SERVER, ContainerRequest, ObservedContainer
from dtma.observability.metrics import METRICS
from tests.engine_fixture import EngineHarness, new_toolbox_id, notes_server, spec, time_server

pytestmark = pytest.mark.integration


class FaultyRuntime:
    """The real Docker runtime, with an OSError injected into one kind of call while armed."""

    def __init__(self, real: DockerRuntime) -> None:
        self._real = real
        self.fail_create_of: str | None = None
        self.fail_inspect = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def create_and_start(self, req: ContainerRequest) -> ObservedContainer:
        if req.labels.get(LABEL_SERVER) == self.fail_create_of:
            raise OSError(28, "No space left on device")
        return await self._real.create_and_start(req)

    async def inspect(self, container_id: str) -> ObservedContainer | None:
        if self.fail_inspect:
            raise OSError(5, "Input/output error")
        return await self._real.inspect(container_id)


def _faulty(harness: EngineHarness) -> FaultyRuntime:
    faulty = FaultyRuntime(harness.runtime)
    harness.agent.runtime = faulty  # type: ignore[assignment]  # new toolboxes' runners use it
    return faulty


async def test_a_start_that_raises_fails_the_gate_and_leaves_no_sibling(
    harness: EngineHarness,
) -> None:
    faulty = _faulty(harness)
    tb = new_toolbox_id()
    faulty.fail_create_of = "b"
    body = spec(time_server("a"), time_server("b"))
    op = await harness.apply_and_wait(tb, body)
    assert op.state == "failed"
    assert "internal error: OSError" in (op.error or "")
    assert await harness.containers(tb) == []  # "a" started, then was removed with the rest
    status = await harness.agent.status(tb)
    assert status["phase"] == "failed"
    assert status["servers"] == []

    faulty.fail_create_of = None
    again = await harness.agent.apply(tb, body)
    assert not again.unchanged
    assert again.operation is not None
    assert (await harness.wait(again.operation)).state == "succeeded"
    assert {c.revision for c in await harness.containers(tb)} == {again.revision}


async def test_an_exception_in_the_gate_removes_the_new_revision_and_keeps_the_old(
    harness: EngineHarness,
) -> None:
    faulty = _faulty(harness)
    tb = new_toolbox_id()
    assert (await harness.apply_and_wait(tb, spec(time_server("a")))).state == "succeeded"
    old = {c.id for c in await harness.containers(tb)}
    two = spec(time_server("a"), notes_server("b", "slow_start:3"))
    faulty.fail_inspect = True  # the gate inspects a server that does not answer yet
    op = await harness.apply_and_wait(tb, two)
    faulty.fail_inspect = False
    assert op.state == "failed"
    assert op.error == "internal error: OSError"
    assert {c.id for c in await harness.containers(tb)} == old
    status = await harness.agent.status(tb)
    assert status["phase"] == "healthy"
    assert [(s["name"], s["revision"]) for s in status["servers"]] == [("a", 1)]
    record = await harness.repo.toolbox(tb)
    assert record is not None
    assert record.target_revision is None

    again = await harness.agent.apply(tb, two)  # not a silent no-op
    assert not again.unchanged
    assert again.operation is not None
    assert (await harness.wait(again.operation)).state == "succeeded"
    assert {c.revision for c in await harness.containers(tb)} == {again.revision}


async def test_a_crashed_server_supervision_is_reported_and_restarted(
    harness: EngineHarness,
) -> None:
    faulty = _faulty(harness)
    tb = new_toolbox_id()
    restart = {"attempts": 5, "interval": "10m", "delay": "0.2s", "max_delay": "1s"}
    body = spec(time_server("a"), restart=restart)
    assert (await harness.apply_and_wait(tb, body)).state == "succeeded"
    before = METRICS.task_failures.labels("server")._value.get()
    (first,) = await harness.containers(tb)

    faulty.fail_create_of = "a"  # the restart after the crash raises OSError, not a DtmaError
    await asyncio.to_thread(lambda: harness.docker_client.containers.get(first.id).kill())
    down = await _until(lambda: harness.agent.supervisor.down(), 30, "supervision down")
    assert down == [f"task: server {tb}/a failed (OSError); restarting in 1s"]
    assert METRICS.task_failures.labels("server")._value.get() == before + 1

    faulty.fail_create_of = None  # the supervision runs again and restarts the server

    async def back() -> bool:
        (server,) = (await harness.agent.status(tb))["servers"]
        return (
            not harness.agent.supervisor.down()
            and server["container_id"] != first.id
            and server["health"] == "healthy"
        )

    await _until(back, 30, "supervision back and the server restarted")


async def _until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")
