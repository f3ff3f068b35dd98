"""Resolve a server's secret references just before its container is created.

Values live only in memory, in the container's environment (as: env) and in its tmpfs directory
(as: file). They are registered with the redactor as soon as they are read. The fingerprint (an
HMAC of the values under a key kept in the state dir) goes on a container label, so that a
refresh can tell which servers' values changed without storing any value.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Collection
from dataclasses import dataclass, field

from dtma.errors import SecretsError
from dtma.observability.redaction import Redactor
from dtma.ports import SecretFiles, SecretSource
from dtma.spec.models import ServerSpec


@dataclass(frozen=True)
class ResolvedSecrets:
    env: dict[str, str] = field(repr=False)
    files: dict[str, str] = field(repr=False)
    fingerprint: str


class SecretInjector:
    def __init__(
        self,
        reader: SecretSource | None,
        files: SecretFiles,
        redactor: Redactor,
        hmac_key: bytes,
    ) -> None:
        self._reader = reader
        self.files = files
        self._redactor = redactor
        self._key = hmac_key

    async def resolve(self, server: ServerSpec) -> ResolvedSecrets:
        """Read every secret of `server` now. Raises SecretsError naming the first failure."""
        if not server.secrets:
            return ResolvedSecrets({}, {}, "")
        if self._reader is None:
            raise SecretsError("this agent has no Vault configured (VAULT_ADDR)")
        reads = [
            self._reader.read(s.vault.mount, s.vault.path, s.vault.key, s.vault.version)
            for s in server.secrets
        ]
        results = await asyncio.gather(*reads, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                if isinstance(result, SecretsError):
                    raise result
                raise SecretsError(f"reading secrets failed: {type(result).__name__}")
        values = {s.name: str(v) for s, v in zip(server.secrets, results, strict=True)}
        fingerprint = self.fingerprint(values)
        for value in values.values():
            self._redactor.add(value, fingerprint)
        env = {s.name: values[s.name] for s in server.secrets if s.as_ == "env"}
        files = {s.name: values[s.name] for s in server.secrets if s.as_ == "file"}
        return ResolvedSecrets(env, files, fingerprint)

    def forget_unused(self, live_fingerprints: Collection[str]) -> int:
        """Stop masking values that no live container holds (after the redactor's grace)."""
        return self._redactor.retain(live_fingerprints)

    def fingerprint(self, values: dict[str, str]) -> str:
        blob = json.dumps(sorted(values.items()), separators=(",", ":")).encode()
        return hmac.new(self._key, blob, hashlib.sha256).hexdigest()[:32]
