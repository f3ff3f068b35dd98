"""Vault settings, read without loading hvac: bootstrap imports the client
(adapters/vault.py, hvac and its dependencies) only when DTMA_VAULT_ADDR/VAULT_ADDR is set."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TokenReport = Callable[[bool, str, str], Awaitable[None]]
"""report(failed, reason, message): the token turned unusable (failed) or works again."""


@dataclass(frozen=True)
class VaultConfig:
    addr: str
    token: str | None = None
    token_file: Path | None = None
    role_id_file: Path | None = None
    secret_id_file: Path | None = None
    cacert: Path | None = None
    namespace: str | None = None
    skip_verify: bool = False
    approle_mount: str = "approle"

    def __repr__(self) -> str:
        return f"VaultConfig(addr={self.addr!r}, namespace={self.namespace!r})"


def vault_config_from(settings: Any) -> VaultConfig | None:
    if not settings.vault_addr:
        return None
    return VaultConfig(
        addr=settings.vault_addr,
        token=settings.vault_token,
        token_file=settings.vault_token_file,
        role_id_file=settings.vault_role_id_file,
        secret_id_file=settings.vault_secret_id_file,
        cacert=settings.vault_cacert,
        namespace=settings.vault_namespace,
        skip_verify=settings.vault_skip_verify,
    )
