"""Durations ("250ms", "5s", "5m", "1h", or plain seconds) and sizes ("256m", "1g", bytes)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema

# The very patterns the OpenAPI document states (ASCII digits, no spaces); fullmatch only.
DURATION_PATTERN = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)?$"
SIZE_PATTERN = r"^[0-9]+[kmgKMG]?[bB]?$"
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?")
_SIZE = re.compile(r"([0-9]+)([kmgKMG]?)[bB]?")
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MAX_DURATION_S = 7 * 24 * 3600.0
MAX_SIZE = 1024**4


def parse_duration(value: object) -> float:
    """Seconds as a float. Raises ValueError with a readable reason."""
    if isinstance(value, bool):
        raise ValueError("must be a duration like 250ms, 5s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        seconds = float(m.group(1)) * _DURATION_FACTORS[m.group(2)]
    else:
        raise ValueError("must be a duration like 250ms, 5s, 5m or 1h")
    if not 0 <= seconds <= MAX_DURATION_S:
        raise ValueError("must be between 0 and 7 days")
    return round(seconds, 3)


def parse_size(value: object) -> int:
    """Bytes as an int."""
    if isinstance(value, bool):
        raise ValueError("must be a size like 256m or 1g")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.fullmatch(value)):
        size = int(m.group(1)) * _SIZE_FACTORS[m.group(2).lower()]
    else:
        raise ValueError("must be a size like 256m or 1g")
    if not 0 < size <= MAX_SIZE:
        raise ValueError("must be between 1 byte and 1 TiB")
    return size


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": MAX_DURATION_S},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": "seconds, or a duration like 250ms, 5s, 5m, 1h",
        }
    ),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_SIZE},
                {"type": "string", "pattern": SIZE_PATTERN},
            ],
            "description": "bytes, or a size like 256m, 1g",
        }
    ),
]
