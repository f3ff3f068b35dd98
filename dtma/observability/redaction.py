"""Masks every value read from Vault wherever it would appear: log lines and event messages.

Values shorter than MIN_LENGTH are not masked (masking "a" would mangle every line); the secret
injector rejects nothing for that, but such secrets are weak anyway.
"""

from __future__ import annotations

import threading
from collections.abc import MutableMapping
from typing import Any

MASK = "***"
MIN_LENGTH = 4


class Redactor:
    """Thread-safe set of known secret values."""

    def __init__(self) -> None:
        self._values: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        """Register a value, and each line of a multi-line one (a PEM key printed line by line,
        or joined with another separator, is still masked)."""
        parts = {value, *(line.strip() for line in value.splitlines())}
        new = {p for p in parts if len(p) >= MIN_LENGTH} - self._values
        if new:
            with self._lock:
                self._values = self._values | new

    def redact(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, MASK)
        return text

    def excerpt(self, text: str, limit: int, *, tail: bool = False) -> str:
        """Redact, then cut to `limit` characters (the end of the text when tail=True): cutting
        first could leave part of a secret that no longer matches."""
        text = self.redact(text)
        return text[-limit:] if tail else text[:limit]

    def _scrub(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, dict):
            return {k: self._scrub(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return type(obj)(self._scrub(v) for v in obj)
        if isinstance(obj, BaseException):
            return self.redact(repr(obj))
        return obj

    def processor(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """structlog processor: mask known values in every field, exceptions included."""
        if not self._values:
            return event_dict
        for key, value in list(event_dict.items()):
            event_dict[key] = self._scrub(value)
        return event_dict


REDACTOR = Redactor()
