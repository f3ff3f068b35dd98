"""Vault (or OpenBao) on hvac: login, self-renewal, KV v1/v2 reads. Calls run in threads.

Login: a token (VAULT_TOKEN or DTMA_VAULT_TOKEN_FILE) or AppRole (role_id and secret_id files).
`keep_alive` renews the agent's own token, retries, and logs in again as the pure schedule in
dtma/domain/token_renewal.py decides. Reads retry transient failures (connection
errors, 5xx) a bounded number of times; permission and missing-path errors are permanent.
Errors name the mount, path and key, never a value.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

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

from dtma.adapters.vault_config import TokenReport, VaultConfig
from dtma.domain.token_renewal import (
    EXPIRED,
    NOT_RENEWABLE,
    RENEW_DENIED,
    TTL_CAPPED,
    Action,
    Step,
    TokenSchedule,
)
from dtma.errors import (
    ConfigError,
    DtmaError,
    SecretNotFound,
    SecretsError,
    VaultDenied,
    VaultUnavailable,
)
from dtma.observability.metrics import METRICS

log = structlog.get_logger(__name__)

READ_ATTEMPTS = 3
REQUEST_TIMEOUT_S = 10


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
        self.logins = 0
        self.renewals = 0
        self.renew_errors = 0
        self.token_ttl: float | None = None

    # -- login and renewal ---------------------------------------------------------------------

    @property
    def uses_approle(self) -> bool:
        return bool(self._config.role_id_file and self._config.secret_id_file)

    async def login(self) -> None:
        """Log in (AppRole) or take the token (re-read from its file), then look it up."""
        await asyncio.to_thread(self._login, REQUEST_TIMEOUT_S)

    def _login(self, timeout: float) -> tuple[float, bool, float]:
        """Returns (ttl left, renewable, full ttl). Raises VaultDenied, VaultUnavailable or
        ConfigError."""
        cfg = self._config
        with self._lock:
            try:
                if self.uses_approle:
                    role_id = _read_file(cfg.role_id_file, "DTMA_VAULT_ROLE_ID_FILE")
                    secret_id = _read_file(cfg.secret_id_file, "DTMA_VAULT_SECRET_ID_FILE")
                    self._client.adapter.login(
                        f"/v1/auth/{cfg.approle_mount}/login",
                        json={"role_id": role_id, "secret_id": secret_id},
                        timeout=timeout,
                    )
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
                info = self._client.adapter.get("/v1/auth/token/lookup-self", timeout=timeout)
                info = info["data"]
            except hvac.exceptions.Forbidden:
                raise VaultDenied(f"Vault login at {cfg.addr} was denied") from None
            except (
                hvac.exceptions.VaultError,
                requests.exceptions.RequestException,
                KeyError,
                TypeError,
            ) as exc:
                raise VaultUnavailable(
                    f"Vault login at {cfg.addr} failed: {type(exc).__name__}"
                ) from None
            self.token_ttl = float(info.get("ttl") or 0)
            self.logins += 1
            renewable = bool(info.get("renewable"))
            full_ttl = float(info.get("period") or info.get("creation_ttl") or 0)
            log.info(
                "vault_login",
                addr=cfg.addr,
                method="approle" if self.uses_approle else "token",
                ttl=self.token_ttl,
                renewable=renewable,
            )
            return self.token_ttl, renewable, full_ttl

    async def keep_alive(
        self,
        report: TokenReport | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        """Log in, then renew the token or log in again as domain/token_renewal.py decides,
        until cancelled (it returns only for a token without a TTL). Never raises for Vault
        trouble: it logs and counts it, and calls `report(failed, reason, message)` only when
        the token turns unusable (or about to be) and when it works again, so the error journal
        gets an entry per episode, not per retry. Cancellable at every await; an hvac call
        already in its thread finishes on its own, bounded by its timeout."""
        schedule = TokenSchedule(can_relogin=self.uses_approle, rng=rng or random.Random())
        step = schedule.first(clock())
        reported: str | None = None
        while True:
            await asyncio.sleep(step.delay(clock()))
            if step.action is Action.IDLE:
                return
            timeout = schedule.request_timeout(clock())
            attempted, error = step.action, ""
            try:
                if step.action is Action.RENEW:
                    granted = await asyncio.to_thread(self._renew, schedule.increment, timeout)
                    step = schedule.renewed(clock(), granted)
                else:
                    ttl, renewable, full = await asyncio.to_thread(self._login, timeout)
                    step = schedule.logged_in(clock(), ttl, renewable, full)
            except (VaultUnavailable, VaultDenied, ConfigError) as exc:
                error = exc.message
                denied = not isinstance(exc, VaultUnavailable)
                if attempted is Action.RENEW:
                    self.renew_errors += 1
                    METRICS.vault_renew_errors.inc()
                    step = schedule.renew_failed(clock(), denied)
                else:
                    step = schedule.login_failed(clock(), denied)
                log.warning(
                    f"vault_{attempted.value}_failed",
                    error=error,
                    next=step.action.value,
                    reason=step.reason,
                    retry_in=round(step.delay(clock()), 3),
                )
            reported = await self._report(report, reported, step, error, schedule, clock())

    async def _report(
        self,
        report: TokenReport | None,
        reported: str | None,
        step: Step,
        error: str,
        schedule: TokenSchedule,
        now: float,
    ) -> str | None:
        """Report a change between working and failing; returns the reason now reported."""
        if step.alarm:
            escalates = reported in EXPIRING and step.reason not in EXPIRING
            if reported is not None and not escalates:
                return reported
            message = _alarm_message(step.reason, error, schedule.remaining(now))
            log.error("vault_token_unusable", reason=step.reason, error=message)
            await _notify(report, True, step.reason, message)
            return step.reason
        if reported is not None and not error:
            log.info("vault_token_recovered")
            await _notify(report, False, step.reason, "the agent's Vault token works again")
            return None
        return reported

    def _renew(self, increment: float, timeout: float) -> float:
        """Renew the token asking for `increment` seconds; returns the TTL Vault granted."""
        with self._lock:
            try:
                auth = self._client.adapter.post(
                    "/v1/auth/token/renew-self",
                    json={"increment": f"{int(increment)}s"},
                    timeout=timeout,
                )["auth"]
            except hvac.exceptions.Forbidden:
                raise VaultDenied("Vault token renewal was denied") from None
            except (
                hvac.exceptions.VaultError,
                requests.exceptions.RequestException,
                KeyError,
                TypeError,
            ) as exc:  # an answer without `auth` counts as a failed renewal, not a crash
                raise VaultUnavailable(
                    f"Vault token renewal failed: {type(exc).__name__}"
                ) from None
            self.token_ttl = float(auth.get("lease_duration") or 0)
            self.renewals += 1
            log.info("vault_token_renewed", ttl=self.token_ttl, asked=int(increment))
            return self.token_ttl

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


EXPIRING = frozenset({TTL_CAPPED, NOT_RENEWABLE})


def _alarm_message(reason: str, error: str, left: float | None) -> str:
    """What an operator must know about an unusable token (never the token itself)."""
    expires = f"it expires in {max(0, round(left or 0))}s" if left and left > 0 else "it expired"
    fix = "give the agent a new token (DTMA_VAULT_TOKEN_FILE) or use AppRole"
    if reason == TTL_CAPPED:
        return f"the agent's Vault token reached its maximum TTL and {expires}: {fix}"
    if reason == NOT_RENEWABLE:
        return f"the agent's Vault token is not renewable and {expires}: {fix}"
    if reason == RENEW_DENIED:
        return f"Vault denied renewing the agent's token (revoked or expired): {fix}"
    if reason == EXPIRED:
        return f"the agent's Vault token expired before Vault could renew it: {fix}"
    return f"the agent cannot log in to Vault: {error}"


async def _notify(report: TokenReport | None, failed: bool, reason: str, message: str) -> None:
    if report is None:
        return
    try:
        await report(failed, reason, message)
    except DtmaError as exc:  # the journal's store failing must not stop the renewals
        log.warning("vault_report_failed", error=exc.message)


def _read_file(path: Path | None, var: str) -> str:
    assert path is not None
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {var} ({path}): {exc.strerror}") from None
    if not value:
        raise ConfigError(f"{var} ({path}) is empty")
    return value
