"""Masks every value read from Vault wherever it would appear: log lines and event messages.

Values shorter than MIN_LENGTH are not masked (masking "a" would mangle every line); the secret
injector rejects nothing for that, but such secrets are weak anyway.

The set is bounded to the values in use. A value is kept while a live container's secrets
fingerprint (the `dtma.secrets-hash` label) refers to it, and in any case for READ_GRACE_S after it
was last read (a container is created only after its values are read, so its label cannot be seen
yet). `retain(live_fingerprints)`, called on every re-list, forgets the rest. The lookup order
(longest value first) is computed once per change, never per log line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, MutableMapping
from typing import Any

MASK = "***"
MIN_LENGTH = 4
READ_GRACE_S = 600.0


class Redactor:
    """Thread-safe set of known secret values; `redact` takes no lock (it reads a snapshot)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, grace: float = READ_GRACE_S
    ) -> None:
        self._clock = clock
        self._grace = grace
        self._read_at: dict[str, float] = {}
        self._owners: dict[str, set[str]] = {}  # value -> fingerprints that hold it
        self._ordered: tuple[str, ...] = ()  # longest first; replaced whole on every change
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ordered)

    def add(self, value: str, fingerprint: str = "") -> None:
        """Mask `value` from now on, and each line of a multi-line one (a PEM key printed line
        by line, or joined with another separator, is still masked); `fingerprint` names the
        container label that will hold it."""
        parts = {
            p for p in (value, *(x.strip() for x in value.splitlines())) if len(p) >= MIN_LENGTH
        }
        if not parts:
            return
        with self._lock:
            now = self._clock()
            new = False
            for part in parts:
                new |= part not in self._read_at
                self._read_at[part] = now
                if fingerprint:
                    self._owners.setdefault(part, set()).add(fingerprint)
            if new:
                self._reorder()

    def retain(self, live_fingerprints: Collection[str]) -> int:
        """Forget values that no live fingerprint holds and that were read over `grace` ago.

        A value still in its grace keeps every owner: its container may not exist yet (an image
        pull), or the listing behind `live_fingerprints` may predate it. Returns how many were
        forgotten. Idempotent; safe from any thread.
        """
        live = set(live_fingerprints)
        with self._lock:
            now = self._clock()
            for value, owners in self._owners.items():
                if now - self._read_at.get(value, now) >= self._grace:
                    owners &= live
            gone = [
                value
                for value, read_at in self._read_at.items()
                if now - read_at >= self._grace and not self._owners.get(value)
            ]
            for value in gone:
                del self._read_at[value]
                self._owners.pop(value, None)
            if gone:
                self._reorder()
        return len(gone)

    def _reorder(self) -> None:
        self._ordered = tuple(sorted(self._read_at, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for value in self._ordered:
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
        if not self._ordered:
            return event_dict
        for key, value in list(event_dict.items()):
            event_dict[key] = self._scrub(value)
        return event_dict


REDACTOR = Redactor()
