from __future__ import annotations

import pytest

from dtma.domain.errors_journal import classify, fingerprint, normalise


def test_ids_numbers_hex_and_paths_are_normalised_away() -> None:
    a = "container 3f2a9c81bd00 exited with exit code 1 after 12.5s at /run/dtma/secrets/x op-12ab"
    b = "container 77aa00ffee11 exited with exit code 3 after 9s at /tmp/other/place op-99ff"
    assert normalise(a) == normalise(b)
    assert fingerprint("server_crashed", "container_exited", "tb", "notes", a) == fingerprint(
        "server_crashed", "container_exited", "tb", "notes", b
    )
    assert fingerprint("server_crashed", "container_exited", "tb", "time", a) != fingerprint(
        "server_crashed", "container_exited", "tb", "notes", a
    )


@pytest.mark.parametrize(
    ("reason", "message", "category"),
    [
        (
            "start_failed",
            "image dtma-examples/x:1 is not present locally and could not be pulled",
            "image",
        ),
        ("secrets_failed", "Vault denied reading secret/app key 'k'", "auth"),
        (
            "secrets_failed",
            "Vault unreachable reading secret/app key 'k': ConnectionError",
            "dependency",
        ),
        ("secrets_failed", "the secret at secret/app has no key 'k'", "config"),
        (
            "secrets_failed",
            "file secrets are unavailable: /run/user/1001/dtma/secrets is not a tmpfs",
            "resource",
        ),
        ("container_exited", "exit code 137", "resource"),
        ("probe_failed", "3 consecutive probe failures, last: connect_failed: refused", "network"),
        (
            "probe_failed",
            "3 consecutive probe failures, last: missing_tools: missing tools: x",
            "config",
        ),
        ("container_exited", "exit code 1; last output: Traceback", "runtime"),
    ],
)
def test_categories(reason: str, message: str, category: str) -> None:
    result = classify("rollout_failed", reason, message)
    assert result.category == category
    assert result.hint


@pytest.mark.parametrize(
    ("message", "category"),
    [
        ("the agent's Vault token reached its maximum TTL and it expires in 2s: ...", "auth"),
        ("the agent cannot log in to Vault: Vault login at http://v:8200 was denied", "auth"),
        (
            "the agent cannot log in to Vault: Vault login at http://v failed: ConnectionError",
            "dependency",
        ),
    ],
)
def test_the_agents_own_vault_token(message: str, category: str) -> None:
    result = classify("vault_auth_failed", "token_expired", message)
    assert result.category == category
    assert "secret reference" not in result.hint
