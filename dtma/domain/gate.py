"""The group health gate (after Nomad's allocation health tracker), as a pure state machine.

Feed it what happens to the new revision's servers, with times from an injected clock; ask it for
a Decision. Rules (DESIGN.md):
- it fails at once if any server's container exits, fails to start, or cannot get its secrets;
- a probe failure counts toward `failure_threshold` once the server has answered at all (a server
  that is still starting may refuse connections until the deadline); a server that answers but
  lacks an expected tool counts from the first probe;
- it passes when every server has been running and passing probes continuously for
  `min_healthy_time` (any failure resets that server's clock);
- it fails when a server's `healthy_deadline` passes, counted from that server's own container
  start (`server_started`; with a `started_at`, every server counts from there instead), so a
  server that waited for admission (engine/admission.py) loses none of its time.
Not thread-safe; one tracker per rollout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from dtma.domain.health import HealthTracker
from dtma.domain.probe import ProbeResult

# Reasons: constants that appear verbatim in events.
GATE_PASSED = "gate_passed"
CONTAINER_EXITED = "container_exited"
START_FAILED = "start_failed"
SECRETS_FAILED = "secrets_failed"
PROBE_FAILED = "probe_failed"
DEADLINE_EXCEEDED = "healthy_deadline_exceeded"
SUPERSEDED = "superseded"  # a newer spec was applied while this revision was in its gate


class GateState(Enum):
    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"


@dataclass(frozen=True)
class Decision:
    state: GateState
    reason: str = ""
    server: str | None = None
    detail: str = ""


class GateTracker:
    def __init__(
        self,
        servers: Iterable[str],
        *,
        started_at: float | None,
        min_healthy_time: float,
        healthy_deadline: float,
        failure_threshold: dict[str, int],
    ) -> None:
        # Each server's probe results, under the rules shared with steady state (domain/health).
        self._servers = {name: HealthTracker(failure_threshold.get(name, 3)) for name in servers}
        # A server's deadline counts from its start; None: not started yet, so no deadline.
        self._started: dict[str, float | None] = dict.fromkeys(self._servers, started_at)
        self._min_healthy = min_healthy_time
        self._healthy_deadline = healthy_deadline
        self._failed: Decision | None = None

    def server_started(self, server: str, now: float) -> None:
        """`server`'s container started at `now`: its healthy_deadline counts from here."""
        self._started[server] = now

    def deadline(self, server: str) -> float | None:
        """When `server` fails the gate unless healthy; None while it has not started."""
        start = self._started[server]
        return None if start is None else start + self._healthy_deadline

    def container_exited(self, server: str, exit_code: int | None, detail: str = "") -> None:
        self._fail(CONTAINER_EXITED, server, detail or f"exit code {exit_code}")

    def start_failed(self, server: str, detail: str) -> None:
        self._fail(START_FAILED, server, detail)

    def secrets_failed(self, server: str, detail: str) -> None:
        self._fail(SECRETS_FAILED, server, detail)

    def probe(self, server: str, result: ProbeResult, now: float) -> None:
        s = self._servers[server]
        if s.observe(result, now):
            self._fail(
                PROBE_FAILED,
                server,
                f"{s.failures} consecutive probe failures, last: {s.last_failure}",
            )

    def decide(self, now: float) -> Decision:
        if self._failed:
            return self._failed
        if all(
            s.healthy_since is not None and now - s.healthy_since >= self._min_healthy
            for s in self._servers.values()
        ):
            return Decision(GateState.PASSED, GATE_PASSED)
        for name, s in self._servers.items():
            deadline = self.deadline(name)
            if deadline is None or now < deadline:
                continue
            if s.healthy_since is not None and now - s.healthy_since >= self._min_healthy:
                continue
            last = s.last_failure or "not yet healthy for min_healthy_time"
            self._failed = Decision(
                GateState.FAILED,
                DEADLINE_EXCEEDED,
                name,
                f"not healthy within {self._healthy_deadline:g}s of its start (last: {last})",
            )
            return self._failed
        return Decision(GateState.PENDING)

    def healthy_servers(self) -> list[str]:
        return [n for n, s in self._servers.items() if s.healthy_since is not None]

    def _fail(self, reason: str, server: str, detail: str) -> None:
        if self._failed is None:
            self._failed = Decision(GateState.FAILED, reason, server, detail)
