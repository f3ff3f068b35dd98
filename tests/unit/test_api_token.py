from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dtma.api_token import resolve_api_token
from dtma.config import load_settings
from dtma.errors import ConfigError


def test_generated_once_with_mode_0600_then_reused(tmp_path: Path) -> None:
    settings = load_settings({"DTMA_STATE_DIR": str(tmp_path / "state")})
    first = resolve_api_token(settings)
    path = tmp_path / "state" / "api-token"
    assert first.source == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.value) >= 40
    assert resolve_api_token(settings).value == first.value
    assert first.value not in repr(first)


def test_env_token_wins(tmp_path: Path) -> None:
    settings = load_settings({"DTMA_STATE_DIR": str(tmp_path), "DTMA_API_TOKEN": "e" * 20})
    token = resolve_api_token(settings)
    assert (token.value, token.source) == ("e" * 20, "env")
    assert not (tmp_path / "api-token").exists()


@pytest.mark.parametrize("value", ["Q", "a" * 15, " " * 20 + "shortQQ"])
def test_env_token_must_be_long_enough(tmp_path: Path, value: str) -> None:
    settings = load_settings({"DTMA_STATE_DIR": str(tmp_path), "DTMA_API_TOKEN": value})
    with pytest.raises(ConfigError, match="DTMA_API_TOKEN must be at least 16") as info:
        resolve_api_token(settings)
    assert value.strip() not in str(info.value)


def test_token_file_must_be_private_and_long_enough(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text("short")
    f.chmod(0o600)
    settings = load_settings({"DTMA_API_TOKEN_FILE": str(f)})
    with pytest.raises(ConfigError, match="at least 16 characters"):
        resolve_api_token(settings)
    f.write_text("x" * 32)
    f.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        resolve_api_token(settings)
    f.chmod(0o400)
    assert resolve_api_token(settings).value == "x" * 32
