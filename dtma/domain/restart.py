"""Restart policy after a server is stable (after Nomad's restart tracker), pure.

On each failure: drop attempts older than `interval`; if `attempts` remain, restart after
delay * 2^n (capped at max_delay) plus 0-25% jitter; otherwise mode `fail` gives up (the server
is `failed`) and mode `delay` waits until the oldest attempt leaves the window. The RNG and the
clock are injected so that tests are exact.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from dtma.spec.models import Restart

RESTART = "restart"
EXHAUSTED = "restarts_exhausted"
WAIT_WINDOW = "restart_window_full"


class Verdict(Enum):
    RESTART = "restart"
    GIVE_UP = "give_up"


@dataclass(frozen=True)
class RestartDecision:
    verdict: Verdict
    delay: float
    reason: str
    attempt: int


@dataclass
class RestartTracker:
    policy: Restart
    rng: random.Random = field(default_factory=random.Random)
    _attempts: deque[float] = field(default_factory=deque)

    @property
    def attempts_in_window(self) -> int:
        return len(self._attempts)

    def on_failure(self, now: float) -> RestartDecision:
        while self._attempts and now - self._attempts[0] >= self.policy.interval:
            self._attempts.popleft()
        n = len(self._attempts)
        if n >= self.policy.attempts:
            if self.policy.mode == "fail":
                return RestartDecision(Verdict.GIVE_UP, 0.0, EXHAUSTED, n)
            wait = self._attempts[0] + self.policy.interval - now if self._attempts else 0.0
            self._attempts.popleft() if self._attempts else None
            self._attempts.append(now + wait)
            return RestartDecision(
                Verdict.RESTART, max(wait, self.policy.delay), WAIT_WINDOW, n + 1
            )
        base = min(self.policy.max_delay, self.policy.delay * (2**n))
        delay = min(self.policy.max_delay * 1.25, base * (1 + self.rng.uniform(0, 0.25)))
        self._attempts.append(now)
        return RestartDecision(Verdict.RESTART, round(delay, 3), RESTART, n + 1)

    def spent(self, now: float) -> bool:
        """Whether a failure now would give up (mode `fail`, the window full). Changes nothing."""
        live = [t for t in self._attempts if now - t < self.policy.interval]
        return self.policy.mode == "fail" and len(live) >= self.policy.attempts

    def reset(self) -> None:
        self._attempts.clear()

    def refund(self) -> None:
        """Take back the newest attempt: the failure it counted turned out to be the engine's
        (an outage or a daemon restart), not the server's."""
        if self._attempts:
            self._attempts.pop()

    def history(self) -> tuple[float, ...]:
        """The clock times of the attempts inside the window (what must survive a crash)."""
        return tuple(self._attempts)

    def restore(self, attempts: Iterable[float]) -> None:
        """Load a saved history, so that an agent restart does not refill the budget."""
        self._attempts = deque(sorted(attempts))


def to_wall(times: Iterable[float], now: float, wall_now: float) -> list[float]:
    """Monotonic clock times as wall-clock times (the monotonic clock restarts with the host)."""
    return [round(wall_now - (now - t), 3) for t in times]


def from_wall(times: Iterable[float], now: float, wall_now: float) -> list[float]:
    """Wall-clock times (saved by an earlier agent process) as times on this process's clock."""
    return [now - (wall_now - w) for w in times]
