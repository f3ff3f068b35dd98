"""The controller's heartbeat endpoint over HTTP (aiohttp's client), and its settings.

`HttpController.send` POSTs one body and classifies the answer (domain/heartbeat.read_answer);
it never raises because the controller is down, slow, wrong or hostile: every attempt is
bounded by `timeout` seconds and by MAX_ANSWER bytes read, and redirects are never followed
(the bearer token must not travel to another address). Concurrency: one send at a time (the
heartbeat loop is its only caller); `close()` is idempotent.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import aiohttp

from dtma.domain.heartbeat import BAD_ANSWER, TIMEOUT, UNREACHABLE, Answer, read_answer
from dtma.errors import ConfigError

MAX_ANSWER = 64 * 1024
MAX_ATTEMPT_S = 10.0
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class ControllerConfig:
    url: str
    token: str = field(repr=False)
    interval: float
    advertise_url: str
    labels: MappingProxyType[str, str]
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)


def controller_config_from(settings: Any) -> ControllerConfig | None:
    """The heartbeat settings, with the token file read and the CA loaded; None without
    DTMA_CONTROLLER_URL. Raises ConfigError naming the setting (never the token)."""
    if not settings.controller_url:
        return None
    if settings.controller_token_file is not None:
        token = _read_token(settings.controller_token_file)
    else:
        token = str(settings.controller_token).strip()
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"the controller token (DTMA_CONTROLLER_TOKEN or _FILE) must be at least "
            f"{MIN_TOKEN_LENGTH} characters"
        )
    context = None
    if settings.controller_ca is not None:
        try:
            context = ssl.create_default_context(cafile=str(settings.controller_ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"DTMA_CONTROLLER_CA ({settings.controller_ca}): cannot load it: {exc}"
            ) from None
    return ControllerConfig(
        url=settings.controller_url,
        token=token,
        interval=settings.heartbeat_interval,
        advertise_url=settings.advertise_url or default_advertise_url(settings),
        labels=MappingProxyType(dict(settings.agent_labels)),
        ssl_context=context,
    )


def default_advertise_url(settings: Any) -> str:
    """The API's own address: the listen address, with the host name for a wildcard one."""
    host = settings.listen_host
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - naming the wildcard, not binding it
        host = socket.getfqdn()
    elif ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.tls_cert else "http"
    return f"{scheme}://{host}:{settings.listen_port}"


def _read_token(path: Path) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read DTMA_CONTROLLER_TOKEN_FILE ({path}): {exc.strerror}"
        ) from None
    if not value:
        raise ConfigError(f"DTMA_CONTROLLER_TOKEN_FILE ({path}) is empty")
    return value


class HttpController:
    """POST {url}/v1/agents/{agent_id}/heartbeat with the bearer token."""

    def __init__(self, config: ControllerConfig, agent_id: str, timeout: float) -> None:
        self.url = config.url  # the base URL, as configured (GET /v1/agent shows it)
        self.endpoint = f"{config.url}/v1/agents/{quote(agent_id, safe='')}/heartbeat"
        self._headers = {
            "Authorization": f"Bearer {config.token}",
            "Content-Type": "application/json",
        }
        self._ssl: ssl.SSLContext | bool = config.ssl_context or True
        self._timeout = aiohttp.ClientTimeout(total=min(timeout, MAX_ATTEMPT_S))
        self._session: aiohttp.ClientSession | None = None

    async def send(self, body: bytes) -> Answer:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1, ssl=self._ssl),
                timeout=self._timeout,
                trust_env=False,
            )
        try:
            async with self._session.post(
                self.endpoint, data=body, headers=self._headers, allow_redirects=False
            ) as resp:
                answer = b""
                if 200 <= resp.status < 300:
                    answer = await _read_bounded(resp.content)
                    if len(answer) > MAX_ANSWER:
                        return Answer(BAD_ANSWER, resp.status, detail="an answer over 64 KiB")
                return read_answer(resp.status, answer, resp.headers.get("Location"))
        except TimeoutError:
            return Answer(TIMEOUT, detail=f"no answer within {self._timeout.total:g}s")
        except (aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            return Answer(UNREACHABLE, detail=_describe(exc))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_bounded(stream: aiohttp.StreamReader) -> bytes:
    """The body, or its first MAX_ANSWER + 1 bytes when it is longer."""
    parts: list[bytes] = []
    size = 0
    while size <= MAX_ANSWER:
        chunk = await stream.read(MAX_ANSWER + 1 - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def _describe(exc: BaseException) -> str:
    # aiohttp's messages name the host and port, never the headers; cut to size all the same.
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
