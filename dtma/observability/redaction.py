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
        if len(value) >= MIN_LENGTH and value not in self._values:
            with self._lock:
                self._values = self._values | {value}

    def redact(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, MASK)
        return text

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
