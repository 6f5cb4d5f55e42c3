"""Unit tests for addon/health.py (HealthBoard) and addon/routing.py (plan_attempts), with a manual clock."""

from __future__ import annotations

import pytest

from addon.config import ProviderConfig, Settings
from addon.health import HealthBoard, ProviderHealth
from addon.routing import plan_attempts
from clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def wall() -> ManualClock:
    return ManualClock(now=1_700_000_000.0)


@pytest.fixture
def board(clock: ManualClock, wall: ManualClock) -> HealthBoard:
    return HealthBoard(clock=clock, wall=wall)


def provider(name: str, type: str = "anthropic", enabled: bool = True) -> ProviderConfig:
    return ProviderConfig(name=name, type=type, base_url=f"https://{name}.example.com", auth_value="k", enabled=enabled)


# --- HealthBoard -------------------------------------------------------------------------------------


def test_new_provider_is_healthy(board: HealthBoard) -> None:
    assert board.get("a") == ProviderHealth()
    assert board.cooldown_remaining("a") == 0.0
    assert not board.is_cooling_down("a")


def test_record_failure_sets_cooldown_and_error(board: HealthBoard, wall: ManualClock) -> None:
    board.record_failure("a", "HTTP 529 overloaded_error: Overloaded", cooldown=60)

    health = board.get("a")
    assert board.cooldown_remaining("a") == 60
    assert board.is_cooling_down("a")
    assert health.failures == 1
    assert health.consecutive_failures == 1
    assert health.last_error == "HTTP 529 overloaded_error: Overloaded"
    assert health.last_error_at == wall.now


def test_cooldown_counts_down_with_the_clock(board: HealthBoard, clock: ManualClock) -> None:
    board.record_failure("a", "connection refused", cooldown=60)
    clock.advance(15)
    assert board.cooldown_remaining("a") == 45
    clock.advance(44.5)
    assert board.cooldown_remaining("a") == pytest.approx(0.5)
    assert board.is_cooling_down("a")
    clock.advance(0.5)
    assert board.cooldown_remaining("a") == 0
    assert not board.is_cooling_down("a")
    clock.advance(100)
    assert board.cooldown_remaining("a") == 0  # never negative


def test_cooldown_of_zero_does_not_cool_down(board: HealthBoard) -> None:
    board.record_failure("a", "timeout", cooldown=0)
    assert not board.is_cooling_down("a")
    assert board.get("a").failures == 1


def test_shorter_later_cooldown_does_not_shorten_a_longer_one(board: HealthBoard, clock: ManualClock) -> None:
    board.record_failure("a", "first", cooldown=60)
    clock.advance(10)
    board.record_failure("a", "second", cooldown=5)
    assert board.cooldown_remaining("a") == 50
    assert board.get("a").last_error == "second"
    assert board.get("a").consecutive_failures == 2


def test_later_failure_extends_cooldown(board: HealthBoard, clock: ManualClock) -> None:
    board.record_failure("a", "first", cooldown=60)
    clock.advance(50)
    board.record_failure("a", "second", cooldown=60)
    assert board.cooldown_remaining("a") == 60


def test_record_success_clears_cooldown_and_streak(board: HealthBoard) -> None:
    board.record_failure("a", "boom", cooldown=60)
    board.record_failure("a", "boom again", cooldown=60)
    board.record_success("a")

    health = board.get("a")
    assert board.cooldown_remaining("a") == 0
    assert not board.is_cooling_down("a")
    assert health.consecutive_failures == 0
    assert health.failures == 2  # the all-time count is kept
    assert health.last_error == "boom again"  # so is the last error, for the admin view


def test_record_attempt_counts_requests(board: HealthBoard) -> None:
    for _ in range(3):
        board.record_attempt("a")
    assert board.get("a").requests == 3
    assert board.get("b").requests == 0


def test_a_failure_cools_down_only_its_own_provider(board: HealthBoard) -> None:
    board.record_failure("a", "boom", cooldown=60)
    assert not board.is_cooling_down("b")
    assert board.get("b").failures == 0


def test_retain_keeps_remaining_names_and_drops_others(board: HealthBoard, clock: ManualClock) -> None:
    board.record_attempt("keep")
    board.record_failure("keep", "HTTP 503", cooldown=60)
    board.record_failure("gone", "HTTP 500", cooldown=60)

    board.retain(["keep", "brand-new"])
    clock.advance(20)

    kept = board.get("keep")
    assert (kept.requests, kept.failures, kept.last_error) == (1, 1, "HTTP 503")
    assert board.cooldown_remaining("keep") == 40
    assert board.get("gone") == ProviderHealth()  # forgotten: a fresh record
    assert not board.is_cooling_down("gone")


def test_retain_accepts_any_iterable(board: HealthBoard) -> None:
    board.record_failure("a", "x", cooldown=60)
    board.record_failure("b", "y", cooldown=60)
    board.retain(name for name in ["b"])
    assert not board.is_cooling_down("a")
    assert board.is_cooling_down("b")


# --- plan_attempts -----------------------------------------------------------------------------------


def names(items: list[ProviderConfig]) -> list[str]:
    return [p.name for p in items]


def test_plan_keeps_the_file_order_of_healthy_providers(board: HealthBoard) -> None:
    providers = [provider("c"), provider("a"), provider("b")]
    plan = plan_attempts(providers, board)
    assert names(plan.usable) == ["c", "a", "b"]
    assert plan.skipped == []


def test_disabled_providers_are_skipped_silently(board: HealthBoard) -> None:
    providers = [provider("a", enabled=False), provider("b"), provider("c", enabled=False)]
    board.record_failure("c", "boom", cooldown=60)  # disabled and cooling: still silent
    plan = plan_attempts(providers, board)
    assert names(plan.usable) == ["b"]
    assert plan.skipped == [] and plan.later == []


def test_cooling_provider_is_skipped_with_reason(board: HealthBoard, clock: ManualClock) -> None:
    providers = [provider("a"), provider("b"), provider("c")]
    board.record_failure("a", "HTTP 529 overloaded_error: Overloaded", cooldown=60)
    clock.advance(18)

    assert names(plan_attempts(providers, board).later) == ["a"]  # by default tried after the others
    plan = plan_attempts(providers, board, settings=Settings(all_cooling="refuse"))
    assert names(plan.usable) == ["b", "c"]
    assert len(plan.skipped) == 1
    skipped, reason = plan.skipped[0]
    assert skipped.name == "a"
    assert "HTTP 529 overloaded_error: Overloaded" in reason
    assert "cooling down" in reason
    assert "42s" in reason


def test_cooled_down_provider_returns_in_its_place(board: HealthBoard, clock: ManualClock) -> None:
    providers = [provider("a"), provider("b")]
    board.record_failure("a", "connection refused", cooldown=30)
    assert names(plan_attempts(providers, board).usable) == ["b"]
    clock.advance(30)
    plan = plan_attempts(providers, board)
    assert names(plan.usable) == ["a", "b"]
    assert plan.skipped == []


def test_success_puts_provider_back_at_once(board: HealthBoard) -> None:
    providers = [provider("a"), provider("b")]
    board.record_failure("a", "timeout", cooldown=300)
    board.record_success("a")
    assert names(plan_attempts(providers, board).usable) == ["a", "b"]


def test_all_cooling_gives_no_usable_and_all_skipped(board: HealthBoard) -> None:
    providers = [provider("a"), provider("b")]
    board.record_failure("a", "HTTP 429", cooldown=60)
    board.record_failure("b", "connection reset", cooldown=60)
    plan = plan_attempts(providers, board, settings=Settings(all_cooling="refuse"))
    assert plan.usable == []
    assert names([p for p, _ in plan.skipped]) == ["a", "b"]
    assert "HTTP 429" in plan.skipped[0][1]
    assert "connection reset" in plan.skipped[1][1]


def test_plan_with_types_offers_only_those_provider_types(board: HealthBoard) -> None:
    providers = [provider("o1", type="openai"), provider("a1"), provider("o2", type="openai"), provider("a2")]
    board.record_failure("o2", "boom", cooldown=60)

    plan = plan_attempts(providers, board, types=("anthropic",))
    assert names(plan.usable) == ["a1", "a2"]
    assert plan.skipped == []  # a filtered-out provider is not "skipped", even when cooling

    plan = plan_attempts(providers, board, types=("openai",))
    assert names(plan.usable) == ["o1"]
    assert names(plan.later) == ["o2"]

    assert names(plan_attempts(providers, board, types=None).usable) == ["o1", "a1", "a2"]


def test_plan_of_no_providers_is_empty(board: HealthBoard) -> None:
    plan = plan_attempts([], board)
    assert plan.usable == [] and plan.skipped == []
