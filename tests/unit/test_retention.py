"""Retention rules: which revisions may be pruned, and which never are."""

from __future__ import annotations

from dtma.domain.retention import RetentionPolicy, RevisionInfo, revisions_to_prune

DAY = 86400.0
NOW = 100 * DAY


def _revs(n: int, *, age_days: float = 0, stable: set[int] = frozenset()) -> list[RevisionInfo]:
    return [RevisionInfo(i, i in stable, NOW - age_days * DAY) for i in range(1, n + 1)]


def test_old_revisions_go_but_the_serving_stable_newest_and_rollback_target_stay() -> None:
    revs = _revs(10, age_days=30, stable={2, 4, 6})
    doomed = revisions_to_prune(
        revs, current=6, target=None, stable=6, now=NOW, policy=RetentionPolicy()
    )
    # 6: current and stable; 4: newest stable other than the current (rollback); 10: newest.
    assert doomed == [1, 2, 3, 5, 7, 8, 9]


def test_a_rollout_in_flight_keeps_its_target_and_the_serving_revision() -> None:
    revs = _revs(5, age_days=30, stable={1})
    policy = RetentionPolicy()
    doomed = revisions_to_prune(revs, current=1, target=3, stable=1, now=NOW, policy=policy)
    assert doomed == [2, 4]


def test_young_revisions_are_kept_up_to_the_count() -> None:
    revs = _revs(60, age_days=1, stable={60})
    policy = RetentionPolicy(max_revisions=50)
    doomed = revisions_to_prune(revs, current=60, target=None, stable=60, now=NOW, policy=policy)
    assert doomed == list(range(1, 11))  # the ten beyond the newest 50


def test_a_week_is_kept_by_default() -> None:
    revs = [RevisionInfo(1, True, NOW - 6.9 * DAY), RevisionInfo(2, False, NOW - 7.1 * DAY)]
    revs += [RevisionInfo(3, True, NOW)]
    assert revisions_to_prune(
        revs, current=3, target=None, stable=3, now=NOW, policy=RetentionPolicy()
    ) == [2]


def test_nothing_is_pruned_from_a_toolbox_without_state() -> None:
    assert (
        revisions_to_prune(
            [], current=None, target=None, stable=None, now=NOW, policy=RetentionPolicy()
        )
        == []
    )
