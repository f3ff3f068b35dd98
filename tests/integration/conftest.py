"""Fixtures shared by the engine's integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.engine_fixture import EngineHarness, engine_harness


@pytest.fixture
def reap_grace() -> float:
    """The orphan reaper's grace period; a test module may override this fixture."""
    return 60.0


@pytest.fixture
async def harness(
    tmp_path: Path, images: dict[str, str], reap_grace: float
) -> AsyncIterator[EngineHarness]:
    async for h in engine_harness(tmp_path / "state", reap_grace=reap_grace):
        yield h
