"""The API's error body and the one mapping from error classes to HTTP statuses."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dtma.errors import DockerUnavailable, DtmaError

STATUS_BY_ERROR: tuple[tuple[type[DtmaError], int], ...] = ((DockerUnavailable, 503),)


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return web.json_response(body, status=status, headers=headers)


def status_for(exc: DtmaError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500
