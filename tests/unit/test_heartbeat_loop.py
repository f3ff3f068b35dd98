"""The heartbeat loop (engine/heartbeat.py) on virtual time over a scripted controller: the
interval, pushes and their debounce, retries of transient failures within the interval, one
try per interval after a 401, and what GET /v1/agent and the metrics read from it."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dtma.api.schemas import ControllerOut
from dtma.domain.heartbeat import AgentFacts, Answer, HostFacts, read_answer
from dtma.domain.records import EventRecord
from dtma.engine.heartbeat import HeartbeatSender
from tests.virtual_time import run_virtual

INTERVAL = 10.0


@dataclass
class ScriptedController:
    """Records (virtual time, body) of every heartbeat and answers with `answer(n)`."""

    answer: Callable[[int], Answer] = lambda n: Answer("ok", 200)
    url: str = "http://controller.test"
    got: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    closed: bool = False

    async def send(self, body: bytes) -> Answer:
        self.got.append((asyncio.get_running_loop().time(), json.loads(body)))
        return self.answer(len(self.got))

    async def close(self) -> None:
        self.closed = True

    def times(self) -> list[float]:
        return [round(t, 2) for t, _ in self.got]


def status(tid: str, phase: str = "healthy") -> dict[str, Any]:
    servers = [{"name": "time", "health": "healthy" if phase == "healthy" else "unknown"}]
    return {"id": tid, "revision": 1, "stable_revision": 1, "phase": phase, "updated_at": 1.0,
            "servers": servers}  # fmt: skip


def phase_event(tid: str) -> EventRecord:
    return EventRecord(1, 0.0, "toolbox_phase_changed", tid, None, 1, None, "", "a -> b")


class Harness:
    def __init__(self, controller: ScriptedController) -> None:
        self.controller = controller
        self.state = {"a": status("a"), "b": status("b")}

        async def toolboxes() -> list[dict[str, Any]]:
            return list(self.state.values())

        async def host() -> HostFacts:
            return HostFacts(2, 1 << 30, 1 << 29, 1 << 32, 0.1)

        self.sender = HeartbeatSender(
            agent=AgentFacts("agent-1", "0.1.0", 0.0, "http://agent:8750", {}),
            transport=controller,
            interval=INTERVAL,
            toolboxes=toolboxes,
            host=host,
            wall=lambda: asyncio.get_running_loop().time(),
        )

    async def change(self, tid: str, phase: str) -> None:
        self.state[tid] = status(tid, phase)
        await self.sender.observe(phase_event(tid))


def run(controller: ScriptedController, scenario: Callable[[Harness], Any]) -> Harness:
    h = Harness(controller)

    async def main() -> None:
        task = asyncio.create_task(h.sender.run())
        try:
            await scenario(h)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if not task.cancelled() and task.exception():
                raise task.exception()  # type: ignore[misc]

    run_virtual(main)
    return h


def test_full_at_once_then_one_per_interval_with_only_changes() -> None:
    async def scenario(h: Harness) -> None:
        await asyncio.sleep(35)

    h = run(ScriptedController(), scenario)
    assert h.controller.times() == [0.0, 10.0, 20.0, 30.0]
    bodies = [b for _, b in h.controller.got]
    assert [b["full"] for b in bodies] == [True, False, False, False]
    assert [len(b["toolboxes"]) for b in bodies] == [2, 0, 0, 0]
    assert [b["seq"] for b in bodies] == [1, 2, 3, 4]
    assert h.controller.closed  # cancellation closes the transport


def test_a_phase_change_is_pushed_within_a_second_and_a_burst_makes_one() -> None:
    async def scenario(h: Harness) -> None:
        await asyncio.sleep(3)
        await h.change("a", "degraded")
        await asyncio.sleep(0.05)
        await h.change("a", "deploying")
        await h.change("b", "deploying")
        await asyncio.sleep(0.1)
        await h.change("b", "healthy")
        await asyncio.sleep(2)

    h = run(ScriptedController(), scenario)
    assert h.controller.times() == [0.0, 3.35]  # 0.2 s after the burst's last change
    push = h.controller.got[1][1]
    assert not push["full"]
    assert {(t["id"], t["phase"]) for t in push["toolboxes"]} == {("a", "deploying")}


def test_a_5xx_is_retried_with_backoff_within_the_interval_then_the_agent_catches_up() -> None:
    down_until = 25.0

    async def scenario(h: Harness) -> None:
        await asyncio.sleep(1)
        await h.change("a", "degraded")  # the controller is down: waits for its turn
        await asyncio.sleep(40)

    def answer(n: int) -> Answer:
        loop_time = asyncio.get_running_loop().time()
        return read_answer(503 if loop_time < down_until else 200, b"")

    h = run(ScriptedController(answer), scenario)
    times = h.controller.times()
    during = [t for t in times if t < down_until]
    assert 6 <= len(during) <= 20, times  # retried, but with backoff: no hot loop
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert max(gaps) <= INTERVAL / 2 + 0.01
    first_ok = next(b for t, b in h.controller.got if t >= down_until)
    # Nothing was acknowledged yet: the first answer taken is the full state as it is now.
    assert first_ok["full"]
    assert {t["id"]: t["phase"] for t in first_ok["toolboxes"]} == {
        "a": "degraded",
        "b": "healthy",
    }
    assert h.sender.consecutive_failures == 0
    assert h.sender.last_error == "server_error: HTTP 503"


def test_a_401_is_tried_once_per_interval_even_when_toolboxes_change() -> None:
    async def scenario(h: Harness) -> None:
        for i in range(8):
            await asyncio.sleep(5)
            await h.change("a", "degraded" if i % 2 else "healthy")
        await asyncio.sleep(1)

    h = run(ScriptedController(lambda n: read_answer(401, b"")), scenario)
    assert h.controller.times() == [0.0, 10.0, 20.0, 30.0, 40.0]
    described = ControllerOut.model_validate(h.sender.describe()).model_dump()  # as the API shows
    assert described["consecutive_failures"] == 5
    assert described["last_success"] is None
    assert described["last_error"].startswith("unauthorized: HTTP 401")


def test_resync_makes_the_next_heartbeat_full() -> None:
    async def scenario(h: Harness) -> None:
        await asyncio.sleep(25)

    def answer(n: int) -> Answer:
        return read_answer(200, b'{"resync": true}' if n == 2 else b"{}")

    h = run(ScriptedController(answer), scenario)
    assert [b["full"] for _, b in h.controller.got] == [True, False, True]


def test_age_counts_from_the_last_acknowledged_heartbeat() -> None:
    ages: list[float] = []

    async def scenario(h: Harness) -> None:
        await asyncio.sleep(5)
        ages.append(round(h.sender.age(), 2))
        await asyncio.sleep(20)
        ages.append(round(h.sender.age(), 2))

    def answer(n: int) -> Answer:
        return read_answer(200 if n == 1 else 401, b"")

    run(ScriptedController(answer), scenario)
    assert ages == [5.0, 25.0]
