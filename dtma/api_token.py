"""Where the control API's bearer token comes from.

Order: DTMA_API_TOKEN, else DTMA_API_TOKEN_FILE, else `<state_dir>/api-token`, which is
generated (mode 0600, 256 random bits) on first start and reused after.
"""

from __future__ import annotations

import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from dtma.config import Settings
from dtma.errors import ConfigError
from dtma.state_files import create_once

TOKEN_FILE_NAME = "api-token"  # noqa: S105 - a file name, not a secret
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class ApiToken:
    value: str
    source: str  # "env" or the file's path; safe to log

    def __repr__(self) -> str:  # never show the value
        return f"ApiToken(source={self.source!r})"


def resolve_api_token(settings: Settings) -> ApiToken:
    """Return the token, generating the default token file if needed. Idempotent."""
    if settings.api_token:
        value = settings.api_token.strip()
        if len(value) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"DTMA_API_TOKEN must be at least {MIN_TOKEN_LENGTH} characters; "
                "generate one with: python3 -c 'import secrets; print(secrets.token_hex(32))'"
            )
        return ApiToken(value, "env")
    if settings.api_token_file is not None:
        return ApiToken(_read_token(settings.api_token_file), str(settings.api_token_file))
    path = settings.state_dir / TOKEN_FILE_NAME
    if not path.exists():
        create_once(path, secrets.token_urlsafe(32))
    return ApiToken(_read_token(path), str(path))


def _read_token(path: Path) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read API token file {path}: {exc.strerror}") from None
    if len(value) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"API token file {path} must hold a token of at least {MIN_TOKEN_LENGTH} characters"
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"API token file {path} is readable by other users (mode {mode:04o}); "
            f"run: chmod 600 {path}"
        )
    return value
