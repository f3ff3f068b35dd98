"""One server's health from its probe results: the rules the gate (domain/gate.py) and the
steady-state supervision (engine/server_runner.py) share, as one pure state machine.

Rules:
- a success resets the failure counts, marks the server healthy, and starts (or continues) its
  healthy streak (`healthy_since`, for min_healthy_time);
- a failure ends the healthy streak. It counts toward `threshold` once the server has been
  healthy at least once, or when it is an answer from a live server (missing tools, refused
  credentials): a server that is still starting may refuse connections, and that alone is no
  failure (the deadline deals with a server that never comes up);
- `threshold` consecutive counted failures make the server unhealthy; one success makes it
  healthy again;
- status: unknown until the first success (or the threshold), healthy, or unhealthy. A healthy
  server stays healthy through failures below the threshold.
Times come from the caller's clock. Not thread-safe; one tracker per server container.
"""

from __future__ import annotations

from dataclasses import dataclass

from dtma.domain import probe as probe_reasons
from dtma.domain.probe import ProbeResult

UNKNOWN = "unknown"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"

# Answers from a live server: these count toward the threshold even before the first success.
ANSWERED = frozenset(
    {
        probe_reasons.MISSING_TOOLS,
        probe_reasons.TOOL_NAME_COLLISION,
        probe_reasons.UNAUTHENTICATED,
    }
)


@dataclass
class HealthTracker:
    threshold: int = 3
    failures: int = 0  # consecutive failures that count toward the threshold
    streak: int = 0  # consecutive failures of any kind since the last success
    ever_healthy: bool = False
    healthy_since: float | None = None
    last_failure: str = ""  # "reason: detail" of the newest failure

    @property
    def over_threshold(self) -> bool:
        return self.failures >= self.threshold

    @property
    def status(self) -> str:
        if self.over_threshold:
            return UNHEALTHY
        if self.ever_healthy:
            return HEALTHY
        return UNKNOWN

    def observe(self, result: ProbeResult, now: float) -> bool:
        """Record one probe result at `now`. Returns True when the server is past its failure
        threshold (so False for every success)."""
        if result.healthy:
            self.ever_healthy = True
            self.failures = self.streak = 0
            if self.healthy_since is None:
                self.healthy_since = now
            return False
        self.healthy_since = None
        self.streak += 1
        self.last_failure = f"{result.reason}: {result.detail}" if result.detail else result.reason
        if self.ever_healthy or result.reason in ANSWERED:
            self.failures += 1
        return self.over_threshold

    def healthy_for(self, now: float) -> float:
        """How long the current healthy streak has lasted (0 when not healthy now)."""
        return 0.0 if self.healthy_since is None else now - self.healthy_since

    def forgive(self) -> None:
        """Forget the failures so far (a server that is still within its startup time)."""
        self.failures = self.streak = 0

    def reset(self) -> None:
        """A new container for the server: everything starts again from unknown."""
        self.failures = self.streak = 0
        self.ever_healthy = False
        self.healthy_since = None
        self.last_failure = ""
