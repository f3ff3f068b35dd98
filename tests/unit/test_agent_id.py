"""The agent id: DTMA_AGENT_ID, else generated once into the state dir."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dtma.agent_id import resolve_agent_id
from dtma.config import load_settings
from dtma.errors import ConfigError


def test_generated_once_with_mode_0600_then_reused(tmp_path: Path) -> None:
    settings = load_settings({"DTMA_STATE_DIR": str(tmp_path / "state")})
    first = resolve_agent_id(settings)
    path = tmp_path / "state" / "agent-id"
    assert first.source == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.value) == 12
    assert resolve_agent_id(settings).value == first.value
    other = resolve_agent_id(load_settings({"DTMA_STATE_DIR": str(tmp_path / "other")}))
    assert other.value != first.value


def test_env_id_wins_and_writes_nothing(tmp_path: Path) -> None:
    settings = load_settings({"DTMA_STATE_DIR": str(tmp_path), "DTMA_AGENT_ID": "host-7"})
    identity = resolve_agent_id(settings)
    assert (identity.value, identity.source) == ("host-7", "env")
    assert not (tmp_path / "agent-id").exists()


@pytest.mark.parametrize("bad", ["Host7", "-a", "a-", "a_b", "a" * 33, "a/b", "a b"])
def test_a_bad_env_id_names_the_variable(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"DTMA_AGENT_ID: .* is not an agent id"):
        load_settings({"DTMA_AGENT_ID": bad})


def test_a_damaged_id_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "agent-id").write_text("NOT VALID\n")
    with pytest.raises(ConfigError, match=r"agent id file .* is not an agent id"):
        resolve_agent_id(load_settings({"DTMA_STATE_DIR": str(tmp_path)}))


def test_pool_and_adopt_settings() -> None:
    settings = load_settings({"DTMA_SUBNET_POOL": "10.50.0.0/16", "DTMA_ADOPT_ORPHANS": "true"})
    assert (settings.subnet_pool, settings.adopt_orphans) == ("10.50.0.0/16", True)
    assert load_settings({}).subnet_pool == "10.213.0.0/16"
    with pytest.raises(ConfigError, match=r"DTMA_SUBNET_POOL: .*Docker's default"):
        load_settings({"DTMA_SUBNET_POOL": "172.18.0.0/16"})
