from __future__ import annotations

from pathlib import Path

import pytest

from dtma.config import default_secrets_dir, load_settings
from dtma.errors import ConfigError


def test_defaults_match_the_design() -> None:
    s = load_settings({})
    assert s.listen == "127.0.0.1:8750"
    assert s.state_dir == Path(".dtma")
    assert s.secrets_dir == Path("/run/dtma/secrets")
    assert s.vault_addr is None
    assert not s.allow_disk_secrets


def test_environment_overrides_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "dtma.yaml"
    cfg.write_text("DTMA_LISTEN: 0.0.0.0:9000\nstate_dir: /var/lib/dtma\nlog_level: DEBUG\n")
    s = load_settings({"DTMA_LISTEN": "127.0.0.1:9100"}, config_file=cfg)
    assert s.listen == "127.0.0.1:9100"
    assert s.state_dir == Path("/var/lib/dtma")
    assert s.log_level == "debug"
    assert (s.listen_host, s.listen_port) == ("127.0.0.1", 9100)


def test_ipv6_listen_address() -> None:
    s = load_settings({"DTMA_LISTEN": "[::1]:8750"})
    assert (s.listen_host, s.listen_port) == ("::1", 8750)


@pytest.mark.parametrize("bad", ["8750", "host:", "host:99999", ":80"])
def test_bad_listen_names_the_variable(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"DTMA_LISTEN: .*HOST:PORT"):
        load_settings({"DTMA_LISTEN": bad})


def test_errors_never_echo_a_token_value() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"DTMA_ALLOW_DISK_SECRETS": "s3cr3t-value"})
    assert "DTMA_ALLOW_DISK_SECRETS" in str(caught.value)
    assert "s3cr3t-value" not in str(caught.value)
    assert "hunter2" not in repr(load_settings({"DTMA_API_TOKEN": "hunter2"}))


def test_unknown_config_file_key_is_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "dtma.yaml"
    cfg.write_text("listen_on: x\n")
    with pytest.raises(ConfigError, match="unknown key 'listen_on'"):
        load_settings({}, config_file=cfg)


def test_config_file_must_be_a_mapping(tmp_path: Path) -> None:
    cfg = tmp_path / "dtma.yaml"
    cfg.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings({}, config_file=cfg)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings({"DTMA_CONFIG": str(tmp_path / "nope.yaml")})


@pytest.mark.parametrize(
    ("env", "euid", "expected"),
    [
        ({}, 0, "/run/dtma/secrets"),
        ({"XDG_RUNTIME_DIR": "/run/user/1000"}, 0, "/run/dtma/secrets"),  # root keeps /run
        ({"XDG_RUNTIME_DIR": "/run/user/1000"}, 1000, "/run/user/1000/dtma/secrets"),
        ({}, 1000, "/run/dtma/secrets"),  # no XDG dir: serve then exits 2 naming the setting
        ({"XDG_RUNTIME_DIR": "relative"}, 1000, "/run/dtma/secrets"),
    ],
)
def test_default_secrets_dir(env: dict[str, str], euid: int, expected: str) -> None:
    assert default_secrets_dir(env, euid) == Path(expected)


def test_an_explicit_secrets_dir_wins_over_the_default() -> None:
    env = {"DTMA_SECRETS_DIR": "/srv/s", "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert load_settings(env).secrets_dir == Path("/srv/s")


def test_host_scale_settings_default_to_the_cpu_count_and_refuse_zero() -> None:
    assert (load_settings({}).max_starts, load_settings({}).docker_threads) == (None, None)
    s = load_settings({"DTMA_MAX_STARTS": "3", "DTMA_DOCKER_THREADS": "12"})
    assert (s.max_starts, s.docker_threads) == (3, 12)
    for var in ("DTMA_MAX_STARTS", "DTMA_DOCKER_THREADS"):
        with pytest.raises(ConfigError, match=f"{var}: .*greater than or equal to 1"):
            load_settings({var: "0"})
