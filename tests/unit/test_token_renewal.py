"""The token schedule: renew at half the TTL, retry with bounded backoff, log in again when the
token cannot be extended. Times are injected; nothing sleeps."""

from __future__ import annotations

import itertools
import random

from dtma.domain import token_renewal as tr
from dtma.domain.token_renewal import Action, TokenSchedule


class NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


class MaxJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


def approle(rng: random.Random | None = None) -> TokenSchedule:
    return TokenSchedule(can_relogin=True, rng=rng or NoJitter())


def plain(rng: random.Random | None = None) -> TokenSchedule:
    return TokenSchedule(can_relogin=False, rng=rng or NoJitter())


def test_starts_with_a_login_then_renews_at_half_the_ttl_asking_for_the_full_ttl() -> None:
    s = approle()
    assert s.first(100.0) == tr.Step(Action.LOGIN, 100.0, tr.START)
    step = s.logged_in(100.0, ttl=4, renewable=True)
    assert (step.action, step.at, step.reason, step.alarm) == (
        Action.RENEW,
        102.0,
        tr.HALF_TTL,
        False,
    )
    assert s.increment == 4
    step = s.renewed(102.0, granted=4)
    assert (step.action, step.at) == (Action.RENEW, 104.0)
    assert s.remaining(102.0) == 4


def test_renewals_ask_for_the_full_ttl_not_what_was_left_at_login() -> None:
    s = approle()
    step = s.logged_in(0.0, ttl=3000, renewable=True, full_ttl=3600)
    assert step.at == 1500.0
    assert s.increment == 3600
    assert s.renewed(1500.0, granted=3600).reason == tr.HALF_TTL


def test_a_token_without_a_ttl_needs_nothing() -> None:
    assert approle().logged_in(0.0, ttl=0, renewable=False).action is Action.IDLE


def test_transient_failures_back_off_and_several_tries_fit_before_expiry() -> None:
    s = approle()
    s.logged_in(0.0, ttl=60, renewable=True)
    now, tries = 30.0, []
    while True:
        step = s.renew_failed(now, denied=False)
        if step.action is not Action.RENEW:
            break
        assert step.reason == tr.RENEW_RETRY
        tries.append(round(step.at - now, 3))
        now = step.at
    # 0.5, 1, 2, 4, then capped at 5 s, and shrinking to a third of what is left near expiry
    assert tries[:5] == [0.5, 1.0, 2.0, 4.0, 5.0]
    assert len(tries) >= 8
    assert all(b <= a for a, b in itertools.pairwise(tries[4:]))  # never longer once capped
    assert now >= 60  # it kept trying until the token had expired, then logs in again
    assert (step.action, step.reason, step.alarm) == (Action.LOGIN, tr.EXPIRED, False)


def test_retries_are_bounded_by_the_time_left_so_a_short_ttl_gets_several() -> None:
    s = approle(MaxJitter())
    s.logged_in(0.0, ttl=4, renewable=True)
    step = s.renew_failed(2.0, denied=False)  # 2 s left: the wait is at most a third of it
    assert step.at - 2.0 <= 2 / 3
    tries = 1
    while step.action is Action.RENEW and step.at < 4:
        step = s.renew_failed(step.at, denied=False)
        tries += 1
    assert tries >= 4


def test_jitter_adds_at_most_a_quarter() -> None:
    s = approle(MaxJitter())
    s.logged_in(0.0, ttl=3600, renewable=True)
    assert s.renew_failed(1800.0, denied=False).at == 1800.625
    seeded = approle(random.Random(3))
    seeded.logged_in(0.0, ttl=3600, renewable=True)
    assert 1800.5 <= seeded.renew_failed(1800.0, denied=False).at <= 1800.625


def test_a_success_resumes_the_normal_schedule() -> None:
    s = approle()
    s.logged_in(0.0, ttl=10, renewable=True)
    for t in (5.0, 5.5, 6.5):
        s.renew_failed(t, denied=False)
    step = s.renewed(7.0, granted=10)
    assert (step.action, step.at, step.reason) == (Action.RENEW, 12.0, tr.HALF_TTL)
    assert s.renew_failed(12.0, denied=False).at == 12.5  # the backoff starts over


def test_a_capped_ttl_means_log_in_again_before_expiry_with_approle() -> None:
    s = approle()
    s.logged_in(0.0, ttl=4, renewable=True)
    step = s.renewed(4.0, granted=2)  # token_max_ttl 6 s: only 2 s granted of the 4 asked
    assert (step.action, step.at, step.reason, step.alarm) == (
        Action.LOGIN,
        5.0,
        tr.TTL_CAPPED,
        False,
    )


def test_a_capped_plain_token_sounds_the_alarm_and_rereads_its_token_at_expiry() -> None:
    s = plain()
    s.logged_in(0.0, ttl=4, renewable=True)
    step = s.renewed(4.0, granted=2)
    assert (step.action, step.at, step.reason, step.alarm) == (
        Action.LOGIN,
        6.0,
        tr.TTL_CAPPED,
        True,
    )


def test_a_token_that_is_not_renewable() -> None:
    step = approle().logged_in(0.0, ttl=10, renewable=False)
    assert (step.action, step.at, step.reason, step.alarm) == (
        Action.LOGIN,
        5.0,
        tr.NOT_RENEWABLE,
        False,
    )
    step = plain().logged_in(0.0, ttl=10, renewable=False)
    assert (step.action, step.at, step.alarm) == (Action.LOGIN, 10.0, True)


def test_a_denied_renewal_logs_in_again_at_once() -> None:
    s = approle()
    s.logged_in(0.0, ttl=10, renewable=True)
    step = s.renew_failed(5.0, denied=True)
    assert (step.action, step.at, step.reason, step.alarm) == (
        Action.LOGIN,
        5.0,
        tr.RENEW_DENIED,
        False,
    )
    p = plain()
    p.logged_in(0.0, ttl=10, renewable=True)
    assert p.renew_failed(5.0, denied=True).alarm


def test_failed_relogins_retry_before_expiry_and_alarm_after_it() -> None:
    s = approle()
    s.logged_in(0.0, ttl=6, renewable=True)
    s.renewed(4.0, granted=2)  # capped: log in again at 5, the token ends at 6
    step = s.login_failed(5.0, denied=False)
    assert step.action is Action.LOGIN
    assert not step.alarm
    assert step.at - 5.0 <= 1 / 3 + 1e-9
    step = s.login_failed(6.5, denied=False)
    assert step.alarm  # the token has expired and no new one could be had
    assert step.at - 6.5 <= s.max_delay * 1.25


def test_first_logins_alarm_only_after_a_few_tries_unless_denied() -> None:
    s = approle()
    alarms = [s.login_failed(float(i), denied=False).alarm for i in range(tr.ALARM_AFTER)]
    assert alarms == [False] * (tr.ALARM_AFTER - 1) + [True]
    assert approle().login_failed(0.0, denied=True).alarm


def test_login_backoff_is_capped() -> None:
    s = approle()
    delays = [round(s.login_failed(0.0, denied=False).at, 3) for _ in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_request_timeouts_never_outlive_the_token() -> None:
    s = approle()
    assert s.request_timeout(0.0) == s.request_timeout_max  # not logged in yet
    s.logged_in(0.0, ttl=4, renewable=True)
    assert s.request_timeout(2.0) == 1.0
    s.logged_in(0.0, ttl=3600, renewable=True)
    assert s.request_timeout(1800.0) == s.request_timeout_max
    s.logged_in(0.0, ttl=60, renewable=True)
    assert s.request_timeout(30.0) == 10.0
    assert s.request_timeout(57.0) == 1.0
