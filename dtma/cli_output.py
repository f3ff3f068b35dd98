"""How the CLI prints: JSON for scripts, aligned tables for people."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel


def print_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    print(json.dumps(value, indent=2, sort_keys=True))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def print_status(status: Any) -> None:
    print(f"phase {status.phase}, revision {status.revision}, stable {status.stable_revision}")
    rows = [
        (
            s.name,
            s.revision,
            s.state,
            s.health,
            s.restarts,
            s.container_id[:12],
            s.endpoint,
            s.last_error,
        )
        for s in status.servers
    ]
    if rows:
        print(
            table(
                rows,
                [
                    "SERVER",
                    "REV",
                    "STATE",
                    "HEALTH",
                    "RESTARTS",
                    "CONTAINER",
                    "ENDPOINT",
                    "LAST ERROR",
                ],
            )
        )
