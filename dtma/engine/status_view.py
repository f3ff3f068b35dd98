"""The status of one toolbox as the API shows it: its DB row joined with its live runners.

Pure and synchronous (called once per toolbox by GET /v1/toolboxes, so it stays cheap).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dtma.domain.records import ToolboxListing
from dtma.engine.toolbox_runner import ToolboxRunner


def toolbox_status(
    row: ToolboxListing, tb: ToolboxRunner | None, redact: Callable[[str, int], str]
) -> dict[str, Any]:
    """`row` from the state DB; `tb` the live runner, if any (its phase wins over the row's)."""
    toolbox_id, phase, stable, updated_at, latest = row
    runners = [*tb.servers.values(), *tb.gate_runners.values()] if tb else []
    return {
        "id": toolbox_id,
        "revision": latest,
        "stable_revision": stable,
        "phase": tb.phase if tb else phase,
        "servers": [
            {
                "name": r.name,
                "revision": r.revision,
                "container_id": r.container.id,
                "state": r.state,
                "health": r.health,
                "restarts": r.restarts,
                "endpoint": r.endpoint,
                "tools": r.tools,
                "last_error": redact(r.last_error, 500) if r.last_error else None,
            }
            for r in runners
        ],
        "updated_at": updated_at,
    }
