"""When to renew the agent's Vault token and when to log in again: a pure state machine.

Renew at half the TTL, asking for the TTL the token had at login. A failed renewal is retried
with exponential backoff plus 0-25% jitter, each wait bounded to a third of the time the token
has left, so that several tries happen before it expires; a success resumes the half-TTL rhythm.
The token cannot be extended further when a renewal grants less than asked (the TTL is capped by
token_max_ttl or explicit_max_ttl), when it is not renewable, when a renewal is denied or when it
has expired. Then, with AppRole, the agent logs in again (well before expiry if it still can);
with a plain token it can only read its token again (a rotated DTMA_VAULT_TOKEN_FILE), so the
step carries `alarm` and the caller reports it loudly.

Times are monotonic seconds passed in by the caller and the RNG is injected, so tests are exact.
Not thread-safe: one schedule per token keeper.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum

# Reasons (they appear in log lines and events).
START = "start"
HALF_TTL = "half_ttl"
RENEW_RETRY = "renew_retry"
LOGIN_RETRY = "login_retry"
TTL_CAPPED = "ttl_capped"
NOT_RENEWABLE = "not_renewable"
RENEW_DENIED = "renew_denied"
EXPIRED = "token_expired"
NO_TTL = "no_ttl"

ALARM_AFTER = 3  # failed first logins before the agent reports Vault as a problem


class Action(Enum):
    RENEW = "renew"
    LOGIN = "login"
    IDLE = "idle"  # a token without a TTL (a root token): nothing left to do


@dataclass(frozen=True)
class Step:
    """Do `action` at monotonic time `at`. `alarm`: the token is, or is about to be, unusable
    and the agent cannot fix it by itself (report it loudly)."""

    action: Action
    at: float
    reason: str
    alarm: bool = False

    def delay(self, now: float) -> float:
        return max(0.0, self.at - now)


@dataclass
class TokenSchedule:
    """Feed it every outcome; each call returns the next step. `can_relogin`: AppRole."""

    can_relogin: bool
    rng: random.Random = field(default_factory=random.Random)
    base_delay: float = 0.5
    max_delay: float = 5.0
    min_delay: float = 0.25
    request_timeout_max: float = 10.0
    _ttl: float = 0.0
    _expires_at: float | None = None
    _failures: int = 0

    def first(self, now: float) -> Step:
        return Step(Action.LOGIN, now, START)

    @property
    def increment(self) -> float:
        """The TTL to ask for on renewal: the one the token had at login."""
        return self._ttl

    def remaining(self, now: float) -> float | None:
        return None if self._expires_at is None else self._expires_at - now

    def request_timeout(self, now: float) -> float:
        """A request must not outlive the token: a hung Vault would otherwise eat the time
        left for retries."""
        left = self.remaining(now)
        if left is None or left <= 0:
            return self.request_timeout_max
        return min(self.request_timeout_max, max(1.0, left / 3))

    # -- outcomes ----------------------------------------------------------------------------

    def logged_in(
        self, now: float, ttl: float, renewable: bool, full_ttl: float | None = None
    ) -> Step:
        """`ttl`: what the token has left; `full_ttl`: its period or creation TTL, which each
        renewal asks for again (a token looked up a while after it was made has less left)."""
        self._failures = 0
        if ttl <= 0:
            self._expires_at = None
            return Step(Action.IDLE, now, NO_TTL)
        self._ttl = max(ttl, full_ttl or 0)
        self._expires_at = now + ttl
        if not renewable:
            return self._cannot_extend(now, NOT_RENEWABLE)
        return Step(Action.RENEW, now + ttl / 2, HALF_TTL)

    def renewed(self, now: float, granted: float) -> Step:
        self._failures = 0
        self._expires_at = now + granted
        if granted <= 0 or granted < self._ttl:
            return self._cannot_extend(now, TTL_CAPPED)
        return Step(Action.RENEW, now + granted / 2, HALF_TTL)

    def renew_failed(self, now: float, denied: bool) -> Step:
        """`denied`: Vault refused (403: revoked, expired, or no permission to renew)."""
        left = self.remaining(now)
        if denied or left is None or left <= 0:
            self._failures = 0
            return Step(
                Action.LOGIN, now, RENEW_DENIED if denied else EXPIRED, not self.can_relogin
            )
        self._failures += 1
        return Step(Action.RENEW, now + self._retry_delay(left), RENEW_RETRY)

    def login_failed(self, now: float, denied: bool) -> Step:
        """A failed login (AppRole) or token lookup (plain token). While the current token is
        still valid the retries are bounded by its time left; afterwards they back off. The
        alarm sounds on a denial, once a token the agent had has expired, and at start after
        ALARM_AFTER tries (Vault may simply be starting beside the agent)."""
        self._failures += 1
        left = self.remaining(now)
        if left is not None and left > 0:
            return Step(Action.LOGIN, now + self._retry_delay(left), LOGIN_RETRY, denied)
        alarm = denied or left is not None or self._failures >= ALARM_AFTER
        return Step(Action.LOGIN, now + self._retry_delay(None), LOGIN_RETRY, alarm)

    # -- helpers -----------------------------------------------------------------------------

    def _cannot_extend(self, now: float, reason: str) -> Step:
        assert self._expires_at is not None
        left = self._expires_at - now
        if self.can_relogin:
            return Step(Action.LOGIN, now + max(0.0, left / 2), reason)
        return Step(Action.LOGIN, self._expires_at, reason, alarm=True)

    def _retry_delay(self, left: float | None) -> float:
        """Exponential from base_delay, capped, plus 0-25% jitter; at most a third of `left`
        (but never below min_delay)."""
        n = max(0, self._failures - 1)
        delay = min(self.max_delay, self.base_delay * (2**n))
        delay *= 1 + self.rng.uniform(0, 0.25)
        if left is not None:
            delay = min(delay, left / 3)
        return round(max(self.min_delay, float(delay)), 3)
