"""The OAuth settings: DTMA_OAUTH_ISSUERS (a JSON array in the environment, a list in the
config file), DTMA_PUBLIC_URL and the canonical base URL derived from DTMA_LISTEN."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dtma.config import load_settings
from dtma.errors import ConfigError

DEV = "http://127.0.0.1:8200/v1/identity/oidc"


def env(issuers: object, **more: str) -> dict[str, str]:
    return {"DTMA_OAUTH_ISSUERS": json.dumps(issuers), **more}


def test_issuers_from_the_environment_with_their_defaults() -> None:
    s = load_settings(env([{"issuer": DEV}, {"issuer": "https://idp.example", "leeway": "5s"}]))
    dev, other = s.oauth_issuers
    assert (dev.audience, dev.jwks_url, dev.toolbox_claim, dev.scope_prefix) == (
        None,
        None,
        None,
        "toolbox:",
    )
    assert dev.leeway == 30.0
    assert other.leeway == 5.0
    assert "HS256" not in dev.algorithms
    assert s.base_url == "http://127.0.0.1:8750"


def test_issuers_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "dtma.yaml"
    path.write_text(
        "DTMA_PUBLIC_URL: https://agent.example/\n"
        "oauth_issuers:\n"
        "  - issuer: https://login.example/realms/mcp\n"
        "    audience: dtma\n"
        "    toolbox_claim: toolboxes\n"
    )
    s = load_settings({}, path)
    assert s.oauth_issuers[0].toolbox_claim == "toolboxes"
    assert s.base_url == "https://agent.example"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (env([{"issuer": "http://idp.example"}]), "http is allowed only to a loopback host"),
        (env([{"issuer": DEV, "algorithms": ["HS256"]}]), "DTMA_OAUTH_ISSUERS"),
        (env([{"issuer": DEV, "algorithms": ["none"]}]), "DTMA_OAUTH_ISSUERS"),
        (env([{"issuer": DEV, "leeway": "10m"}]), "DTMA_OAUTH_ISSUERS"),
        (env([{"issuer": DEV, "colour": "red"}]), "DTMA_OAUTH_ISSUERS"),
        (env([{"issuer": DEV}, {"issuer": DEV}]), "names an issuer twice"),
        ({"DTMA_OAUTH_ISSUERS": "{not json"}, "must be a JSON array"),
        (env([{"issuer": DEV}], DTMA_LISTEN="0.0.0.0:8750"), "DTMA_PUBLIC_URL must be set"),
        ({"DTMA_PUBLIC_URL": "ftp://agent"}, "DTMA_PUBLIC_URL"),
        ({"DTMA_PUBLIC_URL": 'https://agent.example/"x'}, "DTMA_PUBLIC_URL"),
    ],
)
def test_bad_oauth_settings_are_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ)


def test_the_base_url_follows_tls_and_ipv6() -> None:
    assert load_settings({"DTMA_LISTEN": "[::1]:9000"}).base_url == "http://[::1]:9000"
    s = load_settings(
        env([{"issuer": DEV}], DTMA_LISTEN="0.0.0.0:8750", DTMA_PUBLIC_URL="https://a.example")
    )
    assert s.base_url == "https://a.example"
