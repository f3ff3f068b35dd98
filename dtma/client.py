"""An async client for the dtma control API, on aiohttp, with typed results.

Connection errors and 503s are retried (tenacity, bounded); every other error raises ApiError
with the server's code, message and details. POSTs carry an Idempotency-Key, so a retried POST
does not start a second operation.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
from pydantic import BaseModel
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from dtma.api.schemas import (
    AdoptOut,
    AgentOut,
    ApplyAcceptedOut,
    CallsPageOut,
    ErrorsOut,
    EventOut,
    EventsPageOut,
    HealthOut,
    OperationOut,
    OperationRefOut,
    RevisionsOut,
    TokenCreatedOut,
    TokensOut,
    ToolboxListOut,
    ToolboxStatusOut,
    ToolsOut,
)

M = TypeVar("M", bound=BaseModel)
FINAL_STATES = frozenset({"succeeded", "rolled_back", "failed"})


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list[dict[str, Any]]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class Unavailable(ApiError):
    """503: the agent is starting or Docker is unreachable. Retried."""


class Unreachable(Exception):
    """The agent could not be reached at all."""


class DtmaClient:
    def __init__(
        self, base_url: str, token: str, *, timeout: float = 30, retries: int = 4, ssl: Any = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._retries = retries
        self._ssl = ssl
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- plumbing ------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, Any]:
        assert self._session is not None, "use `async with DtmaClient(...)`"
        hdrs = dict(headers or {})
        if method == "POST":
            hdrs.setdefault("Idempotency-Key", secrets.token_hex(16))
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(
                    (aiohttp.ClientConnectionError, Unavailable, asyncio.TimeoutError)
                ),
                stop=stop_after_attempt(self._retries),
                wait=wait_exponential(multiplier=0.3, max=3),
                reraise=True,
            ):
                with attempt:
                    return await self._once(
                        method, path, body, data, hdrs, params, timeout or self._timeout
                    )
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise Unreachable(f"cannot reach the agent at {self.base_url}: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(
        self,
        method: str,
        path: str,
        body: Any,
        data: bytes | None,
        headers: dict[str, str],
        params: dict[str, Any] | None,
        timeout: float,
    ) -> tuple[int, Any]:
        assert self._session is not None
        async with self._session.request(
            method,
            self.base_url + path,
            json=body,
            data=data,
            headers=headers,
            params=params,
            ssl=self._ssl,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            text = await resp.text()
            try:
                parsed: Any = json.loads(text) if text else None
            except ValueError:
                parsed = text
            if resp.status >= 400:
                err = (parsed or {}).get("error", {}) if isinstance(parsed, dict) else {}
                queued = err.get("code") == "operation_queued"  # recorded: never sent twice
                cls = Unavailable if resp.status == 503 and not queued else ApiError
                raise cls(
                    resp.status,
                    err.get("code", "error"),
                    err.get("message", text[:200]),
                    err.get("details", []),
                )
            return resp.status, parsed

    @staticmethod
    def _as(model: type[M], body: Any) -> M:
        return model.model_validate(body)

    # -- API -----------------------------------------------------------------------------------

    async def health(self) -> HealthOut:
        return self._as(HealthOut, (await self._call("GET", "/v1/health"))[1])

    async def agent(self) -> AgentOut:
        return self._as(AgentOut, (await self._call("GET", "/v1/agent"))[1])

    async def adopt(self) -> AdoptOut:
        return self._as(AdoptOut, (await self._call("POST", "/v1/agent/adopt"))[1])

    async def toolboxes(self) -> list[ToolboxStatusOut]:
        return self._as(ToolboxListOut, (await self._call("GET", "/v1/toolboxes"))[1]).items

    async def get(self, toolbox: str) -> ToolboxStatusOut:
        return self._as(ToolboxStatusOut, (await self._call("GET", f"/v1/toolboxes/{toolbox}"))[1])

    async def apply(
        self,
        toolbox: str,
        spec: str | bytes,
        *,
        wait: float | None = None,
        if_match: int | None = None,
    ) -> ApplyAcceptedOut | ToolboxStatusOut:
        """202 -> ApplyAcceptedOut; unchanged or waited -> ToolboxStatusOut."""
        headers = {"Content-Type": "application/yaml"}
        if if_match is not None:
            headers["If-Match"] = str(if_match)
        params = {"wait": wait} if wait else None
        data = spec.encode() if isinstance(spec, str) else spec
        status, body = await self._call(
            "PUT",
            f"/v1/toolboxes/{toolbox}",
            data=data,
            headers=headers,
            params=params,
            timeout=(wait or 0) + self._timeout,
        )
        if status == 202 and "operation" in body and isinstance(body["operation"], str):
            return self._as(ApplyAcceptedOut, body)
        return self._as(ToolboxStatusOut, body)

    async def delete(self, toolbox: str) -> OperationRefOut:
        return self._as(
            OperationRefOut, (await self._call("DELETE", f"/v1/toolboxes/{toolbox}"))[1]
        )

    async def rollback(self, toolbox: str, revision: int | None = None) -> OperationRefOut:
        body = {"revision": revision} if revision is not None else {}
        return self._as(
            OperationRefOut,
            (await self._call("POST", f"/v1/toolboxes/{toolbox}/rollback", body=body))[1],
        )

    async def server_operation(
        self, toolbox: str, kind: str, servers: list[str] | None = None
    ) -> OperationRefOut:
        return self._as(
            OperationRefOut,
            (
                await self._call(
                    "POST", f"/v1/toolboxes/{toolbox}/{kind}", body={"servers": servers or None}
                )
            )[1],
        )

    async def refresh_secrets(self, toolbox: str) -> OperationRefOut:
        return self._as(
            OperationRefOut,
            (await self._call("POST", f"/v1/toolboxes/{toolbox}/secrets/refresh"))[1],
        )

    async def operation(self, op: str) -> OperationOut:
        return self._as(OperationOut, (await self._call("GET", f"/v1/operations/{op}"))[1])

    async def wait_operation(
        self, op: str, timeout: float = 600, poll: float = 0.5
    ) -> OperationOut:
        deadline = time.monotonic() + timeout
        while True:
            result = await self.operation(op)
            if result.state in FINAL_STATES or time.monotonic() >= deadline:
                return result
            await asyncio.sleep(poll)

    async def revisions(self, toolbox: str) -> RevisionsOut:
        return self._as(
            RevisionsOut, (await self._call("GET", f"/v1/toolboxes/{toolbox}/revisions"))[1]
        )

    async def tools(self, toolbox: str) -> ToolsOut:
        return self._as(ToolsOut, (await self._call("GET", f"/v1/toolboxes/{toolbox}/tools"))[1])

    async def logs(self, toolbox: str, server: str, tail: int = 100) -> str:
        _, body = await self._call(
            "GET", f"/v1/toolboxes/{toolbox}/servers/{server}/logs", params={"tail": tail}
        )
        return str(body or "")

    async def create_token(self, toolbox: str, name: str | None = None) -> TokenCreatedOut:
        """A client token for the toolbox's MCP endpoint; the value is in this answer only."""
        body = {"name": name} if name else {}
        _, out = await self._call("POST", f"/v1/toolboxes/{toolbox}/tokens", body=body)
        return self._as(TokenCreatedOut, out)

    async def tokens(self, toolbox: str) -> TokensOut:
        return self._as(TokensOut, (await self._call("GET", f"/v1/toolboxes/{toolbox}/tokens"))[1])

    async def revoke_token(self, toolbox: str, token_id: str) -> None:
        await self._call("DELETE", f"/v1/toolboxes/{toolbox}/tokens/{token_id}")

    async def calls(self, toolbox: str, since: int = 0, limit: int = 500) -> CallsPageOut:
        params = {"since": since, "limit": limit}
        _, out = await self._call("GET", f"/v1/toolboxes/{toolbox}/calls", params=params)
        return self._as(CallsPageOut, out)

    async def errors(self, **filters: Any) -> ErrorsOut:
        return self._as(ErrorsOut, (await self._call("GET", "/v1/errors", params=filters))[1])

    async def events(
        self, since: int = 0, toolbox: str | None = None, limit: int = 500
    ) -> EventsPageOut:
        params: dict[str, Any] = {"since": since, "limit": limit}
        if toolbox:
            params["toolbox"] = toolbox
        return self._as(EventsPageOut, (await self._call("GET", "/v1/events", params=params))[1])

    async def follow(self, since: int = 0, toolbox: str | None = None) -> AsyncIterator[EventOut]:
        """Live events (SSE). Reconnects after a drop, resuming after the last event seen."""
        assert self._session is not None
        last = since
        while True:
            params: dict[str, Any] = {"since": last}
            if toolbox:
                params["toolbox"] = toolbox
            headers = {"Accept": "text/event-stream", "Last-Event-ID": str(last)}
            try:
                async with self._session.get(
                    self.base_url + "/v1/events", params=params, headers=headers, ssl=self._ssl
                ) as resp:
                    if resp.status != 200:
                        raise ApiError(resp.status, "error", await resp.text(), [])
                    data, kind = "", ""
                    async for raw in resp.content:
                        line = raw.decode().rstrip("\n")
                        if line.startswith("data: "):
                            data = line[6:]
                        elif line.startswith("event: "):
                            kind = line[7:]
                        elif not line and data:
                            if kind == "resume":  # dropped as too slow: reconnect at its cursor
                                last = int(json.loads(data)["cursor"])
                                break
                            event = EventOut.model_validate_json(data)
                            last = event.cursor
                            data, kind = "", ""
                            yield event
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(1)
