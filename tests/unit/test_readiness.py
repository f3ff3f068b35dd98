from __future__ import annotations

from dtma.engine.engine_watch import EngineWatch
from dtma.engine.readiness import ReadinessMonitor
from tests.fakes import FakeEnginePing


async def test_not_ready_until_checked_and_loaded() -> None:
    watch = EngineWatch(FakeEnginePing(up=True))
    monitor = ReadinessMonitor(watch)
    assert monitor.check() == ["docker: not checked yet", "state: not loaded"]
    monitor.mark_state_loaded()
    await watch.check()
    assert monitor.check() == []


async def test_engine_down_then_up() -> None:
    engine = FakeEnginePing(up=False)
    watch = EngineWatch(engine, clock=lambda: 100.0)
    monitor = ReadinessMonitor(watch)
    monitor.mark_state_loaded()
    await watch.check()
    assert monitor.check() == ["docker: Docker engine unreachable: fake is down (for 0s)"]
    engine.up = True
    await watch.check()
    assert monitor.check() == []
    assert engine.calls == 2
