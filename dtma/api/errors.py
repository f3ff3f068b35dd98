"""The API's error body and the one mapping from error classes to HTTP statuses."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dtma.errors import (
    Conflict,
    DockerError,
    DockerUnavailable,
    DtmaError,
    NotFound,
    PreconditionFailed,
    SpecInvalid,
    TooManyRequests,
)

STATUS_BY_ERROR: tuple[tuple[type[DtmaError], int], ...] = (
    (SpecInvalid, 422),
    (NotFound, 404),
    (Conflict, 409),
    (PreconditionFailed, 412),
    (TooManyRequests, 429),
    (DockerUnavailable, 503),
    (DockerError, 503),
)


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
