"""How long a provider cools down after failures: the policy (health.cooldown_seconds) and how failover
records a failure with it (failover.record_failure). A manual clock, no network."""

from __future__ import annotations

from addon.config import Settings
from addon.failover import record_failure
from addon.health import AUTH, RATE_LIMITED, SERVER_ERROR, TRANSPORT, HealthBoard, cooldown_seconds
from clock import ManualClock

# -- health.cooldown_seconds ------------------------------------------------------------------------------------

def test_cooldown_grows_per_consecutive_failure() -> None:
    assert [cooldown_seconds(10, 2, 1000, n) for n in range(1, 6)] == [10, 20, 40, 80, 160]
    assert [cooldown_seconds(5, 3, 1000, n) for n in range(1, 5)] == [5, 15, 45, 135]


def test_cooldown_first_failure_and_zero_consecutive_are_base() -> None:
    assert cooldown_seconds(10, 2, 1000, 1) == 10
    assert cooldown_seconds(10, 2, 1000, 0) == 10  # never below base, never a fraction of it


def test_cooldown_growth_of_one_is_constant() -> None:
    assert {cooldown_seconds(30, 1, 600, n) for n in range(1, 20)} == {30}


def test_cooldown_is_capped_at_the_ceiling() -> None:
    assert cooldown_seconds(10, 2, 35, 3) == 35
    assert cooldown_seconds(10, 2, 35, 10) == 35
    assert cooldown_seconds(10, 2, 35, 2) == 20  # below the ceiling: untouched


def test_cooldown_ceiling_below_base_is_ignored() -> None:
    assert cooldown_seconds(60, 2, 10, 1) == 60
    assert cooldown_seconds(60, 2, 10, 5) == 60
    assert cooldown_seconds(60, 2, 0, 3) == 60


def test_retry_after_is_a_minimum_cooldown_even_above_the_ceiling() -> None:
    assert cooldown_seconds(10, 2, 35, 1, retry_after=120) == 120  # longer than the policy: wins
    assert cooldown_seconds(10, 2, 35, 5, retry_after=120) == 120  # even above the ceiling
    assert cooldown_seconds(10, 2, 35, 2, retry_after=5) == 20  # shorter: the policy wins
    assert cooldown_seconds(10, 2, 35, 1, retry_after=0) == 10
    assert cooldown_seconds(10, 2, 35, 1, retry_after=None) == 10


def test_zero_base_cooldown_stays_zero_unless_retry_after() -> None:
    assert cooldown_seconds(0, 2, 600, 5) == 0
    assert cooldown_seconds(0, 2, 600, 5, retry_after=7) == 7


# -- failover.record_failure ------------------------------------------------------------------------------------

POLICY = Settings(failure_cooldown=10, cooldown_growth=2, max_cooldown=35, auth_failure_cooldown=3600)


def test_record_failure_consecutive_failures_grow_the_cooldown(board: HealthBoard, clock: ManualClock) -> None:
    seen = []
    for _ in range(4):
        record_failure(board, POLICY, "a", "HTTP 500", SERVER_ERROR)
        seen.append(board.cooldown_remaining("a"))
        clock.advance(board.cooldown_remaining("a"))  # the cooldown ends, the next attempt fails again
    assert seen == [10, 20, 35, 35]
    assert board.get("a").consecutive_failures == 4


def test_record_failure_growth_restarts_after_a_success(board: HealthBoard, clock: ManualClock) -> None:
    record_failure(board, POLICY, "a", "HTTP 500", SERVER_ERROR)
    record_failure(board, POLICY, "a", "HTTP 500", SERVER_ERROR)
    assert board.cooldown_remaining("a") == 20
    board.record_success("a")
    record_failure(board, POLICY, "a", "HTTP 500", SERVER_ERROR)
    assert board.cooldown_remaining("a") == 10


def test_record_failure_auth_uses_auth_failure_cooldown(board: HealthBoard) -> None:
    record_failure(board, POLICY, "a", "HTTP 401", AUTH)
    health = board.get("a")
    assert board.cooldown_remaining("a") == 3600
    assert health.cooldown_class == AUTH
    assert health.cooldown_reason == "HTTP 401"
    assert health.failures_by_class == {AUTH: 1}


def test_record_failure_auth_does_not_grow(board: HealthBoard, clock: ManualClock) -> None:
    for _ in range(3):
        record_failure(board, POLICY, "a", "HTTP 403", AUTH)
        assert board.cooldown_remaining("a") == 3600
        clock.advance(3600)


def test_record_failure_auth_retry_after_larger_wins(board: HealthBoard) -> None:
    record_failure(board, POLICY, "a", "HTTP 401", AUTH, retry_after=7200)
    assert board.cooldown_remaining("a") == 7200


def test_record_failure_retry_after_larger_than_policy_wins(board: HealthBoard) -> None:
    record_failure(board, POLICY, "a", "HTTP 429", RATE_LIMITED, retry_after=120)
    assert board.cooldown_remaining("a") == 120
    assert board.get("a").cooldown_class == RATE_LIMITED


def test_record_failure_retry_after_smaller_than_policy_loses(board: HealthBoard) -> None:
    record_failure(board, POLICY, "a", "HTTP 429", RATE_LIMITED, retry_after=3)
    assert board.cooldown_remaining("a") == 10


def test_record_failure_survives_a_very_long_failure_streak(board: HealthBoard, clock: ManualClock) -> None:
    settings = Settings()  # growth 2.0, max_cooldown 600
    for _ in range(1100):
        record_failure(board, settings, "a", "connection refused", TRANSPORT)
        clock.advance(board.cooldown_remaining("a"))
    assert board.get("a").consecutive_failures == 1100
    record_failure(board, settings, "a", "connection refused", TRANSPORT)
    assert board.cooldown_remaining("a") == settings.max_cooldown


def test_a_stale_failure_counts_but_does_not_lengthen_the_streak(board: HealthBoard) -> None:
    started = board.get("a").failure_epoch  # two requests start on "a" at the same time
    board.record_failure("a", "HTTP 500", cooldown=60, kind=SERVER_ERROR, epoch=started)
    board.record_failure("a", "HTTP 500", cooldown=600, kind=SERVER_ERROR, epoch=started)
    health = board.get("a")
    assert (health.failures, health.consecutive_failures) == (2, 1)
    assert board.cooldown_remaining("a") == 60
