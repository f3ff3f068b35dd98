"""Plain records of persisted state, shared by the engine, the store and the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ToolboxRecord:
    id: str
    current_revision: int | None
    stable_revision: int | None
    target_revision: int | None
    phase: str
    stopped: bool
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class RevisionRecord:
    toolbox: str
    number: int
    spec: str
    spec_hash: str
    stable: bool
    created_at: float


@dataclass(frozen=True)
class OperationRecord:
    id: str
    kind: str
    toolbox: str
    state: str
    revision: int | None
    error: str | None
    params: dict[str, Any]
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class EventRecord:
    cursor: int
    ts: float
    kind: str
    toolbox: str | None
    server: str | None
    revision: int | None
    operation: str | None
    reason: str
    message: str


@dataclass(frozen=True)
class RestartState:
    """A server's restart count and the wall-clock times of the restarts inside its restart
    window, for the revision it was saved under. Survives agent restarts.

    `pending`: written ahead of a restart (the count and the window already include it) and
    cleared once the replacement container runs. A recovery that finds it set knows that
    restart was counted: it adopts the replacement as is, or recreates it without counting
    the same restart twice."""

    revision: int
    restarts: int
    attempts: tuple[float, ...] = ()
    gave_up: bool = False
    pending: bool = False


# One row of the toolbox listing: (id, phase, stable_revision, updated_at, newest revision).
ToolboxListing = tuple[str, str, int | None, float, int | None]
