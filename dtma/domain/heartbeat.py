"""Heartbeats to the controller, the pure part: the body, full-or-delta, and when to send.

Pure: no I/O, no clock of its own (callers pass `now`), so unit tests run on virtual time.
docs/controller.md states the contract this module builds.

- `AckLedger` remembers what the controller has acknowledged, per toolbox, and decides whether
  the next heartbeat is full (the first of the run, every FULL_EVERY-th, the one after an answer
  `{"resync": true}`) or a delta (only the toolboxes whose entry differs from the acknowledged
  one, plus a `deleted` entry for each acknowledged toolbox that is gone). A failed heartbeat
  changes nothing, so the next one is computed from the latest state: only that state is kept,
  never a queue of unsent bodies (memory is bounded by the number of toolboxes).
- `SendSchedule` says when the next heartbeat is due: one interval after the last attempt, or
  sooner when a toolbox changed phase (a push), debounced so that a burst makes one heartbeat.
  While the controller refuses or fails, pushes wait for the interval (never a hot loop).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

FULL_EVERY = 10
DELETED = "deleted"  # the phase a delta gives a toolbox the controller knows and we no longer have
PUSH_QUIET_S = 0.2  # a push waits for this much quiet...
PUSH_MAX_WAIT_S = 0.6  # ...but never longer than this after the first change (contract: 1 s)
MIN_INTERVAL_S = 1.0
MAX_INTERVAL_S = 600.0

LABEL_KEY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?")
LABEL_VALUE = re.compile(r"[A-Za-z0-9._:/@+-]{0,128}")


# How a heartbeat attempt ended (the `outcome` label of dtma_controller_heartbeats_total).
OK = "ok"
UNREACHABLE = "unreachable"  # connection refused, DNS, TLS: retried within the interval
TIMEOUT = "timeout"  # no full answer in time: retried within the interval
SERVER_ERROR = "server_error"  # 5xx: retried within the interval
UNAUTHORIZED = "unauthorized"  # 401/403: the next try is one interval later
REJECTED = "rejected"  # another 4xx: the next try is one interval later
REDIRECT = "redirect"  # 3xx: never followed; the next try is one interval later
BAD_ANSWER = "bad_answer"  # 2xx whose body is not a JSON object (or too large)
OUTCOMES = (OK, UNREACHABLE, TIMEOUT, SERVER_ERROR, UNAUTHORIZED, REJECTED, REDIRECT, BAD_ANSWER)
TRANSIENT = frozenset({UNREACHABLE, TIMEOUT, SERVER_ERROR})


@dataclass(frozen=True, slots=True)
class Answer:
    """What the controller made of one heartbeat. Adapters return it; they never raise because
    the controller failed. `detail` is for logs and GET /v1/agent (no secret in it)."""

    outcome: str
    status: int | None = None
    resync: bool = False
    detail: str = ""

    @property
    def acknowledged(self) -> bool:
        return self.outcome == OK

    @property
    def transient(self) -> bool:
        return self.outcome in TRANSIENT


def read_answer(status: int, body: bytes, location: str | None = None) -> Answer:
    """Classify an HTTP answer to a heartbeat. A 2xx acknowledges it when its body is empty or
    a JSON object; `{"resync": true}` asks for a full heartbeat next."""
    if 200 <= status < 300:
        if not body.strip():
            return Answer(OK, status)
        try:
            doc = json.loads(body)
        except ValueError:
            return Answer(BAD_ANSWER, status, detail=f"HTTP {status} with a body that is not JSON")
        if not isinstance(doc, dict):
            return Answer(BAD_ANSWER, status, detail=f"HTTP {status} with JSON that is no object")
        return Answer(OK, status, resync=doc.get("resync") is True)
    if 300 <= status < 400:
        where = (location or "no Location")[:200]
        return Answer(REDIRECT, status, detail=f"HTTP {status} to {where} (not followed)")
    if status in (401, 403):
        return Answer(UNAUTHORIZED, status, detail=f"HTTP {status}: check DTMA_CONTROLLER_TOKEN")
    if status >= 500:
        return Answer(SERVER_ERROR, status, detail=f"HTTP {status}")
    return Answer(REJECTED, status, detail=f"HTTP {status}")


@dataclass(frozen=True, slots=True)
class ToolboxEntry:
    """One toolbox as a heartbeat shows it. Equality is what "changed" means."""

    id: str
    revision: int | None
    stable_revision: int | None
    phase: str
    servers_healthy: int
    servers_total: int
    updated_at: float

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "revision": self.revision,
            "stable_revision": self.stable_revision,
            "phase": self.phase,
            "servers_healthy": self.servers_healthy,
            "servers_total": self.servers_total,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class HostFacts:
    cpus: int
    memory_bytes: int
    memory_available_bytes: int
    disk_free_bytes: int
    load1: float


@dataclass(frozen=True, slots=True)
class AgentFacts:
    """What a heartbeat says about the agent itself; fixed for one run."""

    id: str
    version: str
    started_at: float
    url: str
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Plan:
    """The next heartbeat: its sequence number, full or not, and the toolboxes it carries."""

    seq: int
    full: bool
    toolboxes: tuple[ToolboxEntry, ...]


def entry_from_status(status: Mapping[str, Any]) -> ToolboxEntry:
    """A heartbeat entry from a toolbox status of the API (engine/status_view.py). A server
    counts once by name, and as healthy when any of its containers is (under start_first the
    old and the new one run side by side)."""
    names = {s["name"] for s in status["servers"]}
    healthy = {s["name"] for s in status["servers"] if s["health"] == "healthy"}
    return ToolboxEntry(
        id=status["id"],
        revision=status["revision"],
        stable_revision=status["stable_revision"],
        phase=status["phase"],
        servers_healthy=len(healthy),
        servers_total=len(names),
        updated_at=status["updated_at"],
    )


class AckLedger:
    """What the controller acknowledged, and the full/delta decision. Loop-only; one per run."""

    def __init__(self, full_every: int = FULL_EVERY) -> None:
        self._full_every = full_every
        self._seq = 0
        self._acked: dict[str, ToolboxEntry] = {}
        self._need_full = True  # until a full heartbeat is acknowledged in this run
        self._since_full = 0  # acknowledged deltas since the last acknowledged full one

    def plan(self, current: Iterable[ToolboxEntry]) -> Plan:
        """The next heartbeat for the toolboxes as they are now. Each call takes a new seq."""
        self._seq += 1
        entries = tuple(current)
        if self._need_full or self._since_full >= self._full_every - 1:
            return Plan(self._seq, True, entries)
        now = {e.id for e in entries}
        changed = [e for e in entries if self._acked.get(e.id) != e]
        gone = [_deleted(e) for tid, e in self._acked.items() if tid not in now]
        return Plan(self._seq, False, (*changed, *gone))

    def acknowledged(self, plan: Plan, resync: bool) -> None:
        """The controller took `plan` (a 2xx); with `resync` the next heartbeat is full."""
        if plan.full:
            self._acked = {e.id: e for e in plan.toolboxes}
            self._since_full = 0
            self._need_full = False
        else:
            for e in plan.toolboxes:
                if e.phase == DELETED:
                    self._acked.pop(e.id, None)
                else:
                    self._acked[e.id] = e
            self._since_full += 1
        if resync:
            self._need_full = True


def _deleted(last: ToolboxEntry) -> ToolboxEntry:
    return ToolboxEntry(
        last.id, last.revision, last.stable_revision, DELETED, 0, 0, last.updated_at
    )


class SendSchedule:
    """When the next heartbeat is due. Times are the caller's clock (seconds). Loop-only.

    Regular heartbeats come `interval` after the previous attempt began. A change (`changed`)
    makes one due `quiet` after the last change of a burst, and at most `max_wait` after its
    first, unless the last attempt failed: then changes wait for the regular time.
    """

    def __init__(
        self,
        interval: float,
        *,
        quiet: float = PUSH_QUIET_S,
        max_wait: float = PUSH_MAX_WAIT_S,
        start: float = 0.0,
    ) -> None:
        self.interval = interval
        self._quiet = quiet
        self._max_wait = max_wait
        self._regular = start  # the first heartbeat is due at once
        self._first: float | None = None
        self._last: float | None = None
        self._pushes = True

    def changed(self, now: float) -> None:
        if self._first is None:
            self._first = now
        self._last = now

    @property
    def pending(self) -> bool:
        return self._first is not None

    def due(self) -> float:
        """The time at which the next heartbeat should be sent."""
        if self._first is None or self._last is None or not self._pushes:
            return self._regular
        return min(self._regular, self._last + self._quiet, self._first + self._max_wait)

    def attempted(self, started: float, ended: float, succeeded: bool) -> None:
        """A heartbeat that began at `started` ended at `ended`. Changes seen before it began
        are in it; changes seen while it ran make a new burst that begins at `ended`, so pushes
        are at least `quiet` apart however fast changes come (never a hot loop)."""
        self._regular = started + self.interval
        if self._last is not None and self._last <= started:
            self._first = self._last = None
        elif self._last is not None:
            self._first = self._last = ended
        self._pushes = succeeded


def payload(
    agent: AgentFacts,
    plan: Plan,
    sent_at: float,
    host: HostFacts,
    counts: tuple[int, int, int],
) -> dict[str, Any]:
    """The JSON body of one heartbeat (docs/controller.md). `counts` is (toolboxes,
    containers, healthy toolboxes) of the whole agent, whether the body is full or not."""
    toolboxes, containers, healthy = counts
    return {
        "agent": {
            "id": agent.id,
            "version": agent.version,
            "started_at": agent.started_at,
            "url": agent.url,
            "labels": dict(agent.labels),
        },
        "seq": plan.seq,
        "sent_at": sent_at,
        "full": plan.full,
        "host": {
            "cpus": host.cpus,
            "memory_bytes": host.memory_bytes,
            "memory_available_bytes": host.memory_available_bytes,
            "disk_free_bytes": host.disk_free_bytes,
            "load1": host.load1,
        },
        "counts": {"toolboxes": toolboxes, "containers": containers, "healthy_toolboxes": healthy},
        "toolboxes": [e.as_json() for e in plan.toolboxes],
    }


def counts_of(entries: Sequence[ToolboxEntry], containers: int) -> tuple[int, int, int]:
    return len(entries), containers, sum(1 for e in entries if e.phase == "healthy")


# -- settings (used by config.py; pure) ---------------------------------------------------------


def parse_labels(value: object) -> dict[str, str]:
    """`k=v,k=v` (or a mapping from a config file) as a dict. ValueError naming the bad part."""
    if isinstance(value, Mapping):
        pairs = [(str(k), "" if v is None else str(v)) for k, v in value.items()]
    elif isinstance(value, str):
        pairs = []
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            key, sep, val = part.partition("=")
            if not sep:
                raise ValueError(f"{part!r} is not key=value (the form is k=v,k=v)")
            pairs.append((key.strip(), val.strip()))
    else:
        raise ValueError("must be k=v,k=v")
    out: dict[str, str] = {}
    for key, val in pairs:
        if not LABEL_KEY.fullmatch(key):
            raise ValueError(
                f"label key {key!r} must be 1-63 letters, digits or . _ / -, "
                "starting and ending with a letter or digit"
            )
        if not LABEL_VALUE.fullmatch(val):
            raise ValueError(
                f"label {key!r}: the value must be at most 128 letters, digits or . _ : / @ + -"
            )
        if key in out:
            raise ValueError(f"label key {key!r} is given twice")
        out[key] = val
    return out


def http_url(value: str) -> str:
    """An http(s) base URL with a host, without a trailing '/', query or fragment."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{value!r} must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"{value!r} has no host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{value!r} must not carry a query, a fragment or credentials")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{value!r} has an invalid port") from None
    return value.strip().rstrip("/")


def interval_bounds(seconds: float) -> float:
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise ValueError("must be between 1s and 10m")
    return seconds
