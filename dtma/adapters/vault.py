"""Vault (or OpenBao) on hvac: login, self-renewal, KV v1/v2 reads. Calls run in threads.

Login: a token (VAULT_TOKEN or DTMA_VAULT_TOKEN_FILE) or AppRole (role_id and secret_id files).
The agent renews its own token at half its TTL. Reads retry transient failures (connection
errors, 5xx) a bounded number of times; permission and missing-path errors are permanent.
Errors name the mount, path and key, never a value.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests.exceptions
import structlog
import urllib3
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from dtma.errors import ConfigError, SecretNotFound, SecretsError, VaultDenied, VaultUnavailable
from dtma.observability.metrics import METRICS

log = structlog.get_logger(__name__)

READ_ATTEMPTS = 3
REQUEST_TIMEOUT_S = 10
MIN_RENEW_S = 1.0


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

    def __repr__(self) -> str:
        return f"VaultConfig(addr={self.addr!r}, namespace={self.namespace!r})"


class VaultClient:
    """One hvac client for the agent. Thread-safe for reads; login/renew hold a lock."""

    def __init__(self, config: VaultConfig) -> None:
        self._config = config
        verify: bool | str = str(config.cacert) if config.cacert else not config.skip_verify
        self._client = hvac.Client(
            url=config.addr, namespace=config.namespace, verify=verify, timeout=REQUEST_TIMEOUT_S
        )
        self._lock = threading.Lock()
        self._kv_versions: dict[str, int] = {}
        if config.skip_verify and not config.cacert:
            # Asked for explicitly: say so once here rather than on every request.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            log.warning(
                "vault_tls_verification_disabled",
                addr=config.addr,
                reason="DTMA_VAULT_SKIP_VERIFY is set",
            )
        self.renewals = 0
        self.renew_errors = 0
        self.token_ttl: float | None = None

    # -- login and renewal ---------------------------------------------------------------------

    async def login(self) -> None:
        await asyncio.to_thread(self._login)

    def _login(self) -> None:
        cfg = self._config
        with self._lock:
            try:
                if cfg.role_id_file and cfg.secret_id_file:
                    role_id = _read_file(cfg.role_id_file, "DTMA_VAULT_ROLE_ID_FILE")
                    secret_id = _read_file(cfg.secret_id_file, "DTMA_VAULT_SECRET_ID_FILE")
                    self._client.auth.approle.login(role_id=role_id, secret_id=secret_id)
                else:
                    token = cfg.token or (
                        _read_file(cfg.token_file, "DTMA_VAULT_TOKEN_FILE")
                        if cfg.token_file
                        else None
                    )
                    if not token:
                        raise ConfigError(
                            "VAULT_ADDR is set but no Vault credentials are: set "
                            "VAULT_TOKEN, DTMA_VAULT_TOKEN_FILE, or the AppRole files"
                        )
                    self._client.token = token
                info = self._client.auth.token.lookup_self()["data"]
            except hvac.exceptions.Forbidden:
                raise VaultDenied(f"Vault login at {cfg.addr} was denied") from None
            except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
                raise VaultUnavailable(
                    f"Vault login at {cfg.addr} failed: {type(exc).__name__}"
                ) from None
            self.token_ttl = float(info.get("ttl") or 0)
            log.info(
                "vault_login",
                addr=cfg.addr,
                method="approle" if cfg.role_id_file else "token",
                ttl=self.token_ttl,
                renewable=bool(info.get("renewable")),
            )

    async def renew_loop(self) -> None:
        """Renew the agent's token at half its TTL, until cancelled. A token without a TTL
        (a root token) needs no renewal. If renewal fails, log in again."""
        while True:
            ttl = self.token_ttl or 0
            if ttl <= 0:
                return
            await asyncio.sleep(max(MIN_RENEW_S, ttl / 2))
            try:
                await asyncio.to_thread(self._renew)
            except (VaultUnavailable, VaultDenied) as exc:
                self.renew_errors += 1
                METRICS.vault_renew_errors.inc()
                log.warning("vault_renew_failed", error=exc.message)
                with contextlib.suppress(VaultUnavailable, VaultDenied, ConfigError):
                    await self.login()

    def _renew(self) -> None:
        with self._lock:
            try:
                auth = self._client.auth.token.renew_self()["auth"]
            except hvac.exceptions.Forbidden:
                raise VaultDenied("Vault token renewal was denied") from None
            except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
                raise VaultUnavailable(
                    f"Vault token renewal failed: {type(exc).__name__}"
                ) from None
            self.token_ttl = float(auth.get("lease_duration") or 0)
            self.renewals += 1
            log.info("vault_token_renewed", ttl=self.token_ttl)

    # -- reads ---------------------------------------------------------------------------------

    async def read(self, mount: str, path: str, key: str, version: int | None = None) -> str:
        """The value at mount/path[key]. Retries transient failures; raises SecretsError."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(VaultUnavailable),
            stop=stop_after_attempt(READ_ATTEMPTS),
            wait=wait_exponential(multiplier=0.2, max=2),
            reraise=True,
        ):
            with attempt:
                try:
                    value = await asyncio.to_thread(self._read, mount, path, key, version)
                except SecretsError as exc:
                    METRICS.vault_requests.labels(exc.code).inc()
                    raise
                METRICS.vault_requests.labels("ok").inc()
                return value
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, mount: str, path: str, key: str, version: int | None) -> str:
        where = f"{mount}/{path} key {key!r}"
        try:
            kv = self._kv_version(mount)
            if kv == 2:
                data = self._client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=mount, version=version, raise_on_deleted_version=True
                )["data"]["data"]
            else:
                data = self._client.secrets.kv.v1.read_secret(path=path, mount_point=mount)["data"]
        except hvac.exceptions.Forbidden:
            raise VaultDenied(f"Vault denied reading {where}") from None
        except hvac.exceptions.InvalidPath:
            raise SecretNotFound(f"no secret at {where}") from None
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            raise VaultUnavailable(
                f"Vault unreachable reading {where}: {type(exc).__name__}"
            ) from None
        if key not in data:
            raise SecretNotFound(f"the secret at {mount}/{path} has no key {key!r}")
        value = data[key]
        return value if isinstance(value, str) else str(value)

    def _kv_version(self, mount: str) -> int:
        if mount not in self._kv_versions:
            try:
                info = self._client.adapter.get(f"/v1/sys/internal/ui/mounts/{mount}")
                options = (info.get("data") or {}).get("options") or {}
                self._kv_versions[mount] = int(options.get("version") or 1)
            except hvac.exceptions.InvalidPath:
                raise SecretNotFound(f"no secrets engine mounted at {mount}") from None
            except hvac.exceptions.Forbidden:
                # Vault answers 403 for a mount that does not exist, as for one we may not use.
                raise VaultDenied(
                    f"Vault denied access to the mount {mount!r} (it may not exist)"
                ) from None
        return self._kv_versions[mount]


def _read_file(path: Path | None, var: str) -> str:
    assert path is not None
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {var} ({path}): {exc.strerror}") from None
    if not value:
        raise ConfigError(f"{var} ({path}) is empty")
    return value


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
