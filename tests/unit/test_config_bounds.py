"""The bound settings: defaults that keep a week, clear refusals, and documentation."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtma.config import ENV_KEYS, load_settings
from dtma.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
BOUNDS = (
    "DTMA_SSE_MAX_SUBSCRIBERS",
    "DTMA_SSE_QUEUE",
    "DTMA_RETAIN_AGE",
    "DTMA_RETAIN_EVENTS",
    "DTMA_RETAIN_OPERATIONS",
    "DTMA_RETAIN_REVISIONS",
    "DTMA_PRUNE_INTERVAL",
)


def test_defaults_keep_a_week_and_cap_streams() -> None:
    s = load_settings({})
    assert s.retain_age == 7 * 86400
    assert (s.retain_events, s.retain_operations, s.retain_revisions) == (100_000, 10_000, 50)
    assert (s.sse_max_subscribers, s.sse_queue, s.prune_interval) == (64, 1000, 3600)


@pytest.mark.parametrize(
    ("value", "seconds"), [("7d", 7 * 86400), ("36h", 36 * 3600), ("90m", 5400), ("30d", 2592000)]
)
def test_retain_age_takes_days(value: str, seconds: float) -> None:
    assert load_settings({"DTMA_RETAIN_AGE": value}).retain_age == seconds


@pytest.mark.parametrize(
    ("var", "value", "reason"),
    [
        ("DTMA_RETAIN_AGE", "10m", "at least 1h"),
        ("DTMA_RETAIN_AGE", "soon", "like 12h or 7d"),
        ("DTMA_SSE_MAX_SUBSCRIBERS", "0", "greater than or equal to 1"),
        ("DTMA_SSE_QUEUE", "lots", "integer"),
        ("DTMA_RETAIN_EVENTS", "5", "greater than or equal to 100"),
        ("DTMA_RETAIN_REVISIONS", "1", "greater than or equal to 2"),
        ("DTMA_PRUNE_INTERVAL", "0s", "greater than or equal to 1"),
    ],
)
def test_bad_bounds_are_refused_naming_the_variable(var: str, value: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"{var}: .*{reason}"):
        load_settings({var: value})


def test_every_bound_is_documented_in_the_readme_and_security_doc() -> None:
    readme = (REPO / "README.md").read_text()
    security = (REPO / "docs" / "security.md").read_text()
    for var in BOUNDS:
        assert var in ENV_KEYS
        assert f"| `{var}` |" in readme, var
        assert f"`{var}`" in security.split("## Bounds", 1)[1], var
