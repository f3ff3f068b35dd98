"""The status of one toolbox as the API shows it: its DB row joined with its live runners.

Pure and synchronous (called once per toolbox by GET /v1/toolboxes, so it stays cheap).

The status is built from a flat tuple of every value it shows (`status_fields`), and the
listing's encoded JSON is cached under those tuples (`ListingCache`): nothing can go stale,
because a cached fragment is only reused when every value it was made from is equal now. A
changed phase, health, restart count, revision or container shows up in the very next answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from dtma.domain.records import ToolboxListing
from dtma.engine.toolbox_runner import ToolboxRunner

Redact = Callable[[str, int], str]
# (name, revision, container id, state, health, restarts, endpoint, tools, last error)
ServerFields = tuple[str, int, str, str, str, int, str | None, tuple[str, ...], str | None]
StatusFields = tuple[str, int | None, int | None, str, float, tuple[ServerFields, ...]]


def status_fields(row: ToolboxListing, tb: ToolboxRunner | None) -> StatusFields:
    """Every value a toolbox's status shows, as one hashable tuple. `row` from the state DB;
    `tb` the live runner, if any (its phase wins over the row's)."""
    toolbox_id, phase, stable, updated_at, latest = row
    runners = [*tb.servers.values(), *tb.gate_runners.values()] if tb else []
    return (
        toolbox_id,
        latest,
        stable,
        tb.phase if tb else phase,
        updated_at,
        tuple(
            (
                r.name,
                r.revision,
                r.container.id,
                r.state,
                r.health,
                r.restarts,
                r.endpoint,
                tuple(r.tools),
                r.last_error,
            )
            for r in runners
        ),
    )


def status_from_fields(fields: StatusFields, redact: Redact) -> dict[str, Any]:
    toolbox_id, latest, stable, phase, updated_at, servers = fields
    return {
        "id": toolbox_id,
        "revision": latest,
        "stable_revision": stable,
        "phase": phase,
        "servers": [_server(s, redact) for s in servers],
        "updated_at": updated_at,
    }


def _server(fields: ServerFields, redact: Redact) -> dict[str, Any]:
    name, revision, container_id, state, health, restarts, endpoint, tools, error = fields
    return {
        "name": name,
        "revision": revision,
        "container_id": container_id,
        "state": state,
        "health": health,
        "restarts": restarts,
        "endpoint": endpoint,
        "tools": list(tools),
        "last_error": redact(error, 500) if error else None,
    }


def toolbox_status(row: ToolboxListing, tb: ToolboxRunner | None, redact: Redact) -> dict[str, Any]:
    return status_from_fields(status_fields(row, tb), redact)


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), check_circular=False).encode()


class ListingCache:
    """The encoded `{"items":[...]}` of GET /v1/toolboxes, reused while nothing in it changed.

    Per toolbox it keeps the encoded status under its fields tuple, and the whole body under
    the tuple of all of them. Encoding a hundred statuses is most of the listing's cost on the
    event loop; comparing tuples is a fraction of it. Loop-only (not thread-safe); holds no
    more than one entry per existing toolbox.
    """

    def __init__(self, redact: Redact) -> None:
        self._redact = redact
        self._parts: dict[str, tuple[StatusFields, bytes]] = {}
        self._body: tuple[tuple[StatusFields, ...], bytes] | None = None

    def encode(self, fields: Sequence[StatusFields]) -> bytes:
        everything = tuple(fields)
        if self._body is not None and self._body[0] == everything:
            return self._body[1]
        parts: dict[str, tuple[StatusFields, bytes]] = {}
        for f in everything:
            cached = self._parts.get(f[0])
            if cached is None or cached[0] != f:
                cached = (f, _compact(status_from_fields(f, self._redact)))
            parts[f[0]] = cached
        self._parts = parts  # deleted toolboxes fall out here
        body = b'{"items":[' + b",".join(p[1] for p in parts.values()) + b"]}"
        self._body = (everything, body)
        return body
