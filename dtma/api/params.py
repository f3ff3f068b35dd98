"""Path, query and header parameters: their patterns and bounds, and the checks the handlers
run. api/openapi.py documents the very same constants, so the document and the code agree.

Patterns are ECMA-compatible for the document; Python matches them with fullmatch() only,
because `$` in Python's `re` also matches before a final newline.
"""

from __future__ import annotations

import math
import re

from aiohttp import web

from dtma.errors import SpecInvalid
from dtma.spec.models import is_dns_label

MAX_WAIT_S = 3600.0
MAX_LOG_TAIL = 10000
MAX_CURSOR = 2**62
MAX_KEY = 255
OPERATION_ID = r"^op-[0-9a-f]{16}$"
IF_MATCH_PATTERN = r'^"?[0-9]{1,18}"?$'
LAST_EVENT_ID_PATTERN = r"^([0-9]{1,18})?$"  # empty: from the start
# Visible ASCII, inner spaces allowed: HTTP strips a header value's outer whitespace.
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]([ -~]*[!-~])?$"


def matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


def invalid(where: str, name: str, msg: str) -> SpecInvalid:
    return SpecInvalid(f"invalid {where} parameter {name}", [{"loc": [where, name], "msg": msg}])


def path_label(request: web.Request, name: str) -> str:
    """A DNS-label path parameter ({id}, {name}); 422 otherwise."""
    value = request.match_info[name]
    if not is_dns_label(value):
        raise SpecInvalid(
            f"invalid {name}",
            [
                {
                    "loc": ["path", name],
                    "msg": "must be a DNS label: lowercase letters, digits "
                    "and '-', 1-63 characters, starting and ending with a letter or digit",
                }
            ],
        )
    return value


def query_label(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is not None and not is_dns_label(value):
        raise invalid("query", name, "must be a DNS label")
    return value


def query_float(request: web.Request, name: str, lo: float, hi: float) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not lo <= value <= hi:
        raise invalid("query", name, f"must be a number from {lo:g} to {hi:g}")
    return value


def query_int(request: web.Request, name: str, lo: int, hi: int, default: int) -> int:
    """An integer query parameter within [lo, hi]; "5.0" counts as 5, as in JSON Schema."""
    raw = request.query.get(name)
    if raw is None:
        return default
    value: int | None = None
    try:
        value = int(raw) if matches(r"[+-]?[0-9]{1,19}", raw) else None
        if value is None:
            number = float(raw)
            value = int(number) if math.isfinite(number) and number == int(number) else None
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise invalid("query", name, f"must be an integer from {lo} to {hi}")
    return value
