from __future__ import annotations

from dtma.engine.readiness import ReadinessMonitor
from tests.fakes import FakeEnginePing


async def test_not_ready_until_checked_and_loaded() -> None:
    engine = FakeEnginePing(up=True)
    monitor = ReadinessMonitor(engine)
    assert monitor.check() == ["docker: not checked yet", "state: not loaded"]
    monitor.mark_state_loaded()
    await monitor.probe_once()
    assert monitor.check() == []


async def test_engine_down_then_up() -> None:
    engine = FakeEnginePing(up=False)
    monitor = ReadinessMonitor(engine)
    monitor.mark_state_loaded()
    await monitor.probe_once()
    assert monitor.check() == ["docker: Docker engine unreachable: fake is down"]
    engine.up = True
    await monitor.probe_once()
    assert monitor.check() == []
    assert engine.calls == 2
