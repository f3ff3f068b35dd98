"""DTMA_RELIST_INTERVAL: the re-list and reaper period. The default is the engine's own; tests
shorten it so that they do not wait out whole 10 s periods (docs/testing.md "Time")."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtma.config import load_settings
from dtma.engine.agent import RELIST_INTERVAL_S
from dtma.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_the_default_is_the_engines_period() -> None:
    assert load_settings({}).relist_interval == RELIST_INTERVAL_S == 10


@pytest.mark.parametrize(("value", "seconds"), [("1s", 1.0), ("2.5s", 2.5), ("1m", 60.0)])
def test_a_duration_sets_it(value: str, seconds: float) -> None:
    assert load_settings({"DTMA_RELIST_INTERVAL": value}).relist_interval == seconds


@pytest.mark.parametrize(
    ("value", "reason"), [("0.5s", "greater than or equal to 1"), ("often", "")]
)
def test_a_bad_value_is_refused_naming_the_variable(value: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"DTMA_RELIST_INTERVAL: .*{reason}"):
        load_settings({"DTMA_RELIST_INTERVAL": value})


def test_it_is_documented() -> None:
    assert "| `DTMA_RELIST_INTERVAL` | `10s` |" in (REPO / "README.md").read_text()
    assert "`DTMA_RELIST_INTERVAL` (10 s)" in (REPO / "docs" / "architecture.md").read_text()
