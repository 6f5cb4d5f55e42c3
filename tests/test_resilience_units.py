"""Direct unit tests for the resilience pieces: cooldown policy (health.py, failover.py), probes, routing
strategies (routing.py), session affinity (affinity.py) and the stream guard (stream_guard.py).

No network, no sleeps, no mocking libraries: clocks are injected, chunk sources are async generators.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator, Iterable

import httpx
import pytest

from addon.affinity import SessionAffinity, session_key
from clock import ManualClock
from addon.config import ProviderConfig, Settings
from addon.failover import RETRY_AFTER_CEILING, attempt_in_turn, failure_class, parse_retry_after, record_failure
from addon.health import (
    AUTH,
    LATENCY_WEIGHT,
    OVERLOADED,
    RATE_LIMITED,
    SERVER_ERROR,
    STREAM_ERROR,
    TIMEOUT,
    TRANSPORT,
    HealthBoard,
    cooldown_seconds,
)
from addon.routing import Plan, Router, order_providers, plan_attempts
from addon.sse import SSESplitter
from addon.stream_guard import CommittedStream, StreamFailure, guarded, hold_until_content
from addon.upstream import ClientPool
from helpers import sse


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def board(clock: ManualClock) -> HealthBoard:
    return HealthBoard(clock=clock, wall=ManualClock(now=1_700_000_000.0))


def provider(name: str, priority: int = 0, weight: float = 1.0, enabled: bool = True) -> ProviderConfig:
    return ProviderConfig(
        name=name,
        base_url=f"https://{name}.example.com",
        auth_value="k",
        priority=priority,
        weight=weight,
        enabled=enabled,
    )


def names(items: Iterable[ProviderConfig]) -> list[str]:
    return [p.name for p in items]


# =====================================================================================================
# health.cooldown_seconds
# =====================================================================================================


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


def test_retry_after_is_a_minimum() -> None:
    assert cooldown_seconds(10, 2, 35, 1, retry_after=120) == 120  # longer than the policy: wins
    assert cooldown_seconds(10, 2, 35, 5, retry_after=120) == 120  # even above the ceiling
    assert cooldown_seconds(10, 2, 35, 2, retry_after=5) == 20  # shorter: the policy wins
    assert cooldown_seconds(10, 2, 35, 1, retry_after=0) == 10
    assert cooldown_seconds(10, 2, 35, 1, retry_after=None) == 10


def test_zero_base_cooldown_stays_zero_unless_retry_after() -> None:
    assert cooldown_seconds(0, 2, 600, 5) == 0
    assert cooldown_seconds(0, 2, 600, 5, retry_after=7) == 7


# =====================================================================================================
# failover.record_failure
# =====================================================================================================

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


# =====================================================================================================
# HealthBoard: probes, success, latency, auth forgiveness, failure classes
# =====================================================================================================


def test_healthy_provider_attempt_is_not_a_probe(board: HealthBoard) -> None:
    assert board.record_attempt("a") is False
    assert board.is_available("a")
    assert board.record_attempt("a") is False
    assert board.get("a").requests == 2


def test_first_attempt_after_cooldown_is_a_probe(board: HealthBoard, clock: ManualClock) -> None:
    board.record_failure("a", "HTTP 503", cooldown=30, kind=OVERLOADED)
    assert not board.is_available("a")
    clock.advance(30)
    assert board.is_available("a")  # cooled down, nobody probing yet

    assert board.record_attempt("a") is True
    health = board.get("a")
    assert health.probing
    assert not board.is_cooling_down("a")
    assert not board.is_available("a")  # others wait for the probe


@pytest.mark.parametrize("outcome", ["failure", "success", "neutral"])
def test_probe_ends_with_any_outcome(board: HealthBoard, clock: ManualClock, outcome: str) -> None:
    board.record_failure("a", "HTTP 503", cooldown=30, kind=OVERLOADED)
    clock.advance(30)
    assert board.record_attempt("a") is True
    assert not board.is_available("a")

    if outcome == "failure":
        board.record_failure("a", "HTTP 503 again", cooldown=30, kind=OVERLOADED)
        assert not board.get("a").probing
        assert not board.is_available("a")  # cooling again
        clock.advance(30)
        assert board.is_available("a")
        assert board.record_attempt("a") is True  # the next one is a probe again
    elif outcome == "success":
        board.record_success("a")
        assert not board.get("a").probing
        assert board.is_available("a")
        assert board.record_attempt("a") is False  # healthy again: not a probe
    else:
        board.record_neutral("a")
        assert not board.get("a").probing
        assert board.is_available("a")
        # A neutral answer says nothing about health: the streak stays, so the next attempt probes again.
        assert board.get("a").consecutive_failures == 1
        assert board.record_attempt("a") is True


def test_probe_only_concerns_its_provider(board: HealthBoard, clock: ManualClock) -> None:
    board.record_failure("a", "x", cooldown=1)
    clock.advance(1)
    board.record_attempt("a")
    assert not board.is_available("a")
    assert board.is_available("b")
    assert board.record_attempt("b") is False


def test_record_success_resets_consecutive_failures(board: HealthBoard) -> None:
    for _ in range(3):
        board.record_failure("a", "boom", cooldown=5)
    assert board.get("a").consecutive_failures == 3
    board.record_success("a")
    health = board.get("a")
    assert health.consecutive_failures == 0
    assert health.cooldown_until == 0.0
    assert health.cooldown_reason is None and health.cooldown_class is None
    assert health.failures == 3


def test_latency_is_a_moving_average(board: HealthBoard) -> None:
    assert board.get("a").latency_ms is None
    board.record_success("a", 100.0)
    assert board.get("a").latency_ms == 100.0  # the first sample is taken as it is
    board.record_success("a", 200.0)
    assert board.get("a").latency_ms == pytest.approx(130.0)  # 100 + 0.3 * (200 - 100)
    board.record_success("a", 130.0)
    assert board.get("a").latency_ms == pytest.approx(130.0)
    board.record_success("a", 30.0)
    assert board.get("a").latency_ms == pytest.approx(100.0)  # 130 + 0.3 * (30 - 130)
    assert LATENCY_WEIGHT == 0.3


def test_success_without_latency_keeps_the_average(board: HealthBoard) -> None:
    board.record_success("a", 80.0)
    board.record_success("a")
    assert board.get("a").latency_ms == 80.0


def test_first_latency_sample_of_zero_is_taken(board: HealthBoard) -> None:
    board.record_success("a", 0.0)
    assert board.get("a").latency_ms == 0.0
    board.record_success("a", 100.0)
    assert board.get("a").latency_ms == pytest.approx(30.0)


def test_forgive_auth_failures_clears_only_auth_cooldowns(board: HealthBoard) -> None:
    board.record_failure("auth", "HTTP 401", cooldown=3600, kind=AUTH)
    board.record_failure("busy", "HTTP 529", cooldown=60, kind=OVERLOADED)
    board.record_failure("down", "connection refused", cooldown=60, kind=TRANSPORT)

    board.forgive_auth_failures()

    auth = board.get("auth")
    assert not board.is_cooling_down("auth")
    assert auth.cooldown_class is None and auth.cooldown_reason is None
    assert auth.consecutive_failures == 0
    assert auth.failures == 1  # history kept
    assert auth.last_error == "HTTP 401"

    assert board.cooldown_remaining("busy") == 60
    assert board.get("busy").cooldown_class == OVERLOADED
    assert board.get("busy").consecutive_failures == 1
    assert board.cooldown_remaining("down") == 60
    assert board.get("down").cooldown_class == TRANSPORT


def test_longer_auth_cooldown_keeps_its_class_after_a_short_failure(board: HealthBoard) -> None:
    board.record_failure("a", "HTTP 401", cooldown=3600, kind=AUTH)
    board.record_failure("a", "connection reset", cooldown=10, kind=TRANSPORT)
    assert board.get("a").cooldown_class == AUTH  # the longer cooldown (and its class) stands
    board.forgive_auth_failures()
    assert not board.is_cooling_down("a")


def test_failures_by_class_counts(board: HealthBoard) -> None:
    kinds = [OVERLOADED, OVERLOADED, RATE_LIMITED, TIMEOUT, OVERLOADED, AUTH, STREAM_ERROR, SERVER_ERROR]
    for kind in kinds:
        board.record_failure("a", kind, cooldown=1, kind=kind)
    board.record_failure("a", "refused", cooldown=1)  # default class: transport
    health = board.get("a")
    assert health.failures_by_class == {
        OVERLOADED: 3,
        RATE_LIMITED: 1,
        TIMEOUT: 1,
        AUTH: 1,
        STREAM_ERROR: 1,
        SERVER_ERROR: 1,
        TRANSPORT: 1,
    }
    assert health.failures == sum(health.failures_by_class.values()) == 9


# =====================================================================================================
# failover.parse_retry_after / failure_class
# =====================================================================================================

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 30 ", 30.0),
        ("1.5", 1.5),
        ("0.25", 0.25),
        ("-5", 0.0),
        ("-0.5", 0.0),
    ],
)
def test_parse_retry_after_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_http_date() -> None:
    future = email.utils.formatdate(NOW + 90, usegmt=True)
    assert parse_retry_after(future, now=NOW) == pytest.approx(90.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 60) == pytest.approx(60.0)


def test_parse_retry_after_http_date_in_the_past_is_zero() -> None:
    past = email.utils.formatdate(NOW - 300, usegmt=True)
    assert parse_retry_after(past, now=NOW) == 0.0


def test_parse_retry_after_far_future_date_is_capped() -> None:
    far = email.utils.formatdate(NOW + 30 * 86400, usegmt=True)
    assert parse_retry_after(far, now=NOW) == RETRY_AFTER_CEILING == 24 * 3600


@pytest.mark.parametrize("value", ["999999999", "1e12", "1e400", "inf"])
def test_parse_retry_after_huge_values_are_capped_at_a_day(value: str) -> None:
    assert parse_retry_after(value, now=NOW) == 24 * 3600


@pytest.mark.parametrize("value", ["garbage", "soon", "12 seconds", "Wed, 32 Oct 2015 07:28:00 GMT", "0x10"])
def test_parse_retry_after_garbage_is_none(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize("value", [None, ""])
def test_parse_retry_after_missing_is_none(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize("value", ["nan", "NaN", "-nan"])
def test_parse_retry_after_nan_is_none(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_parse_retry_after_date_with_absurd_year_is_none() -> None:
    assert parse_retry_after("Wed, 21 Oct 999999999999999999999 07:28:00 GMT", now=NOW) is None


@pytest.mark.parametrize(
    ("status", "detail", "expected"),
    [
        (401, "", AUTH),
        (403, "permission_error: nope", AUTH),
        (429, "", RATE_LIMITED),
        (429, "rate_limit_error: slow down", RATE_LIMITED),
        (503, "", OVERLOADED),
        (529, "", OVERLOADED),
        (529, "overloaded_error: Overloaded", OVERLOADED),
        (500, "overloaded_error: Overloaded", OVERLOADED),
        (502, "upstream is overloaded", OVERLOADED),
        (500, "", SERVER_ERROR),
        (500, "api_error: Internal server error", SERVER_ERROR),
        (502, "", SERVER_ERROR),
        (504, "", SERVER_ERROR),
        (408, "", SERVER_ERROR),
    ],
)
def test_failure_class(status: int, detail: str, expected: str) -> None:
    assert failure_class(status, detail) == expected


def test_failure_class_status_beats_detail_for_auth_and_rate_limits() -> None:
    assert failure_class(401, "overloaded_error: Overloaded") == AUTH
    assert failure_class(429, "overloaded_error: Overloaded") == RATE_LIMITED


# =====================================================================================================
# routing: order_providers / plan_attempts / Router
# =====================================================================================================


def test_priority_keeps_file_order(board: HealthBoard) -> None:
    providers = [provider("c"), provider("a"), provider("b")]
    assert names(order_providers(providers, "priority", board, random.Random(0))) == ["c", "a", "b"]
    plan = plan_attempts(providers, board, settings=Settings(strategy="priority"))
    assert names(plan.usable) == ["c", "a", "b"]


def test_priority_numbers_form_tiers(board: HealthBoard) -> None:
    providers = [provider("a", 2), provider("b", 1), provider("c", 2), provider("d", 1), provider("e", -1)]
    assert names(order_providers(providers, "priority", board, random.Random(0))) == ["e", "b", "d", "a", "c"]
    assert names(plan_attempts(providers, board).usable) == ["e", "b", "d", "a", "c"]


def test_round_robin_rotates_with_the_turn(board: HealthBoard) -> None:
    providers = [provider("a"), provider("b"), provider("c")]
    rng = random.Random(0)
    assert names(order_providers(providers, "round_robin", board, rng, turn=0)) == ["a", "b", "c"]
    assert names(order_providers(providers, "round_robin", board, rng, turn=1)) == ["b", "c", "a"]
    assert names(order_providers(providers, "round_robin", board, rng, turn=2)) == ["c", "a", "b"]
    assert names(order_providers(providers, "round_robin", board, rng, turn=3)) == ["a", "b", "c"]
    assert names(order_providers(providers, "round_robin", board, rng, turn=301)) == ["b", "c", "a"]


def test_router_round_robin_plans_take_turns(board: HealthBoard) -> None:
    providers = [provider("a"), provider("b"), provider("c")]
    router = Router(seed=1)
    settings = Settings(strategy="round_robin")
    plans = [router.plan(providers, board, settings) for _ in range(7)]
    assert [p.usable[0].name for p in plans] == ["a", "b", "c", "a", "b", "c", "a"]
    assert names(plans[1].usable) == ["b", "c", "a"]  # the rest follow, nobody twice


def test_round_robin_rotates_within_each_tier(board: HealthBoard) -> None:
    providers = [provider("a", 0), provider("b", 0), provider("x", 1), provider("y", 1), provider("z", 1)]
    assert names(order_providers(providers, "round_robin", board, random.Random(0), turn=1)) == [
        "b", "a", "y", "z", "x",
    ]


def test_router_round_robin_skips_cooling_provider(board: HealthBoard) -> None:
    providers = [provider("a"), provider("b"), provider("c")]
    board.record_failure("b", "HTTP 529", cooldown=60, kind=OVERLOADED)
    router = Router(seed=1)
    settings = Settings(strategy="round_robin")
    plans = [router.plan(providers, board, settings) for _ in range(3)]
    assert [names(p.usable) for p in plans] == [["a", "c"], ["c", "a"], ["c", "a"]]
    assert all(names(p.later) == ["b"] and p.skipped == [] for p in plans)


@pytest.mark.parametrize("strategy", ["random", "weighted"])
def test_random_strategies_are_deterministic_per_seed(board: HealthBoard, strategy: str) -> None:
    providers = [provider(n, weight=w) for n, w in zip("abcde", [1, 2, 3, 4, 5])]
    settings = Settings(strategy=strategy)

    def run(seed: int) -> list[list[str]]:
        router = Router(seed=seed)
        return [names(router.plan(providers, board, settings).usable) for _ in range(30)]

    assert run(7) == run(7)
    assert run(7) != run(8)  # another seed, another sequence (30 orders of 5 cannot all coincide)
    # order_providers with an explicit generator too
    once = [names(order_providers(providers, strategy, board, random.Random(42))) for _ in range(5)]
    again = [names(order_providers(providers, strategy, board, random.Random(42))) for _ in range(5)]
    assert once == again


@pytest.mark.parametrize("strategy", ["random", "weighted"])
def test_random_strategies_use_each_provider_exactly_once(board: HealthBoard, strategy: str) -> None:
    providers = [provider(n, weight=w) for n, w in zip("abcde", [1, 0.5, 3, 10, 2])]
    router = Router(seed=3)
    settings = Settings(strategy=strategy)
    firsts = set()
    for _ in range(200):
        usable = names(router.plan(providers, board, settings).usable)
        assert sorted(usable) == ["a", "b", "c", "d", "e"]  # all of them, nobody twice
        firsts.add(usable[0])
    assert firsts == {"a", "b", "c", "d", "e"}  # every provider gets to go first some time


@pytest.mark.parametrize("strategy", ["random", "weighted"])
def test_random_strategies_respect_tiers(board: HealthBoard, strategy: str) -> None:
    providers = [provider("low1", 1), provider("top1", 0), provider("low2", 1), provider("top2", 0, weight=5)]
    router = Router(seed=5)
    for _ in range(50):
        usable = names(router.plan(providers, board, Settings(strategy=strategy)).usable)
        assert sorted(usable[:2]) == ["top1", "top2"]
        assert sorted(usable[2:]) == ["low1", "low2"]


def test_weighted_prefers_heavier_providers(board: HealthBoard) -> None:
    providers = [provider("light", weight=1), provider("heavy", weight=3)]
    router = Router(seed=20240601)
    settings = Settings(strategy="weighted")
    plans = [router.plan(providers, board, settings) for _ in range(2000)]
    heavy_first = sum(p.usable[0].name == "heavy" for p in plans)
    assert 0.70 <= heavy_first / 2000 <= 0.80
    assert all(sorted(names(p.usable)) == ["heavy", "light"] for p in plans)


def test_weighted_excludes_cooling_and_includes_every_usable(board: HealthBoard) -> None:
    providers = [provider("a", weight=5), provider("b", weight=1), provider("c", weight=2)]
    board.record_failure("a", "HTTP 500", cooldown=60, kind=SERVER_ERROR)
    router = Router(seed=9)
    for _ in range(50):
        plan = router.plan(providers, board, Settings(strategy="weighted"))
        assert sorted(names(plan.usable)) == ["b", "c"]
        assert names(plan.later) == ["a"]


def test_least_latency_orders_by_latency_unmeasured_first(board: HealthBoard) -> None:
    providers = [provider("slow"), provider("fast"), provider("new"), provider("mid")]
    board.record_success("slow", 900.0)
    board.record_success("fast", 50.0)
    board.record_success("mid", 300.0)
    assert names(order_providers(providers, "least_latency", board, random.Random(0))) == [
        "new", "fast", "mid", "slow",
    ]
    plan = plan_attempts(providers, board, settings=Settings(strategy="least_latency"))
    assert names(plan.usable) == ["new", "fast", "mid", "slow"]


def test_least_latency_follows_the_moving_average(board: HealthBoard) -> None:
    providers = [provider("a"), provider("b")]
    board.record_success("a", 100.0)
    board.record_success("b", 200.0)
    assert names(plan_attempts(providers, board, settings=Settings(strategy="least_latency")).usable) == ["a", "b"]
    for _ in range(5):
        board.record_success("a", 1000.0)
    assert names(plan_attempts(providers, board, settings=Settings(strategy="least_latency")).usable) == ["b", "a"]


def test_least_latency_within_tiers(board: HealthBoard) -> None:
    providers = [provider("t1-fast", 1), provider("t0-slow", 0), provider("t0-fast", 0)]
    board.record_success("t1-fast", 1.0)
    board.record_success("t0-slow", 500.0)
    board.record_success("t0-fast", 100.0)
    assert names(order_providers(providers, "least_latency", board, random.Random(0))) == [
        "t0-fast", "t0-slow", "t1-fast",
    ]


@pytest.mark.parametrize("strategy", ["priority", "round_robin", "weighted", "random", "least_latency"])
def test_preferred_moves_to_the_front_when_usable(board: HealthBoard, strategy: str) -> None:
    providers = [provider("a"), provider("b"), provider("c")]
    plan = plan_attempts(providers, board, settings=Settings(strategy=strategy), preferred="b", rng=random.Random(1))
    assert plan.usable[0].name == "b"
    assert sorted(names(plan.usable)) == ["a", "b", "c"]


def test_preferred_keeps_the_rest_in_planned_order(board: HealthBoard) -> None:
    providers = [provider("a"), provider("b"), provider("c"), provider("d")]
    plan = plan_attempts(providers, board, preferred="c")
    assert names(plan.usable) == ["c", "a", "b", "d"]


def test_preferred_cooling_provider_is_not_moved(board: HealthBoard) -> None:
    providers = [provider("a"), provider("b"), provider("c")]
    board.record_failure("b", "HTTP 529", cooldown=60, kind=OVERLOADED)
    plan = plan_attempts(providers, board, preferred="b")
    assert names(plan.usable) == ["a", "c"]
    assert names(plan.later) == ["b"]


def test_preferred_probing_provider_is_not_moved(board: HealthBoard, clock: ManualClock) -> None:
    providers = [provider("a"), provider("b")]
    board.record_failure("b", "boom", cooldown=1)
    clock.advance(1)
    board.record_attempt("b")
    plan = plan_attempts(providers, board, preferred="b")
    assert names(plan.usable) == ["a"]


def test_preferred_unknown_or_disabled_changes_nothing(board: HealthBoard) -> None:
    providers = [provider("a"), provider("b"), provider("c", enabled=False)]
    assert names(plan_attempts(providers, board, preferred="zzz").usable) == ["a", "b"]
    assert names(plan_attempts(providers, board, preferred="c").usable) == ["a", "b"]


def test_all_cooling_try_soonest_tries_every_one_soonest_back_first(board: HealthBoard, clock: ManualClock) -> None:
    providers = [provider("a"), provider("b"), provider("c")]
    board.record_failure("a", "HTTP 529", cooldown=60, kind=OVERLOADED)
    board.record_failure("b", "HTTP 500", cooldown=20, kind=SERVER_ERROR)
    board.record_failure("c", "HTTP 429", cooldown=40, kind=RATE_LIMITED)
    clock.advance(5)
    plan = plan_attempts(providers, board, settings=Settings(all_cooling="try_soonest"))
    assert plan.usable == [] and plan.skipped == []
    assert names(plan.later) == ["b", "c", "a"]


def test_all_cooling_try_soonest_is_the_default(board: HealthBoard) -> None:
    providers = [provider("a"), provider("b")]
    board.record_failure("a", "x", cooldown=60)
    board.record_failure("b", "y", cooldown=30)
    assert names(plan_attempts(providers, board).later) == ["b", "a"]


def test_all_cooling_try_soonest_excludes_auth(board: HealthBoard) -> None:
    providers = [provider("a"), provider("b"), provider("c")]
    board.record_failure("a", "HTTP 401", cooldown=5, kind=AUTH)  # ends first, but waiting will not help
    board.record_failure("b", "HTTP 529", cooldown=60, kind=OVERLOADED)
    board.record_failure("c", "HTTP 529", cooldown=90, kind=OVERLOADED)
    plan = plan_attempts(providers, board, settings=Settings(all_cooling="try_soonest"))
    assert names(plan.later) == ["b", "c"]
    assert names(s for s, _ in plan.skipped) == ["a"]


def test_an_auth_cooldown_that_is_over_is_tried_again(board: HealthBoard, clock: ManualClock) -> None:
    providers = [provider("a"), provider("b")]
    board.record_failure("a", "HTTP 401", cooldown=5, kind=AUTH)
    clock.advance(5)
    assert names(plan_attempts(providers, board).usable) == ["a", "b"]


def test_all_cooling_try_soonest_with_only_auth_cooldowns_gives_nothing(board: HealthBoard) -> None:
    providers = [provider("a"), provider("b")]
    board.record_failure("a", "HTTP 401", cooldown=3600, kind=AUTH)
    board.record_failure("b", "HTTP 403", cooldown=3600, kind=AUTH)
    plan = plan_attempts(providers, board, settings=Settings(all_cooling="try_soonest"))
    assert plan.usable == []
    assert names(s for s, _ in plan.skipped) == ["a", "b"]


def test_all_cooling_refuse_gives_no_usable_provider(board: HealthBoard) -> None:
    providers = [provider("a"), provider("b")]
    board.record_failure("a", "HTTP 529", cooldown=60, kind=OVERLOADED)
    board.record_failure("b", "HTTP 500", cooldown=20, kind=SERVER_ERROR)
    plan = plan_attempts(providers, board, settings=Settings(all_cooling="refuse"))
    assert plan.usable == []
    assert names(s for s, _ in plan.skipped) == ["a", "b"]


def test_try_soonest_tries_the_usable_first_and_the_cooling_after(board: HealthBoard) -> None:
    providers = [provider("a"), provider("b")]
    board.record_failure("a", "HTTP 529", cooldown=1, kind=OVERLOADED)
    plan = plan_attempts(providers, board, settings=Settings(all_cooling="try_soonest"))
    assert names(plan.usable) == ["b"]
    assert names(plan.later) == ["a"]
    assert plan.skipped == []


def test_refuse_skips_cooling_providers_even_when_someone_is_usable(board: HealthBoard) -> None:
    providers = [provider("a"), provider("b")]
    board.record_failure("a", "HTTP 529", cooldown=1, kind=OVERLOADED)
    plan = plan_attempts(providers, board, settings=Settings(all_cooling="refuse"))
    assert names(plan.usable) == ["b"]
    assert plan.later == []
    assert names(s for s, _ in plan.skipped) == ["a"]


def test_probing_provider_is_skipped_with_a_probe_reason(board: HealthBoard, clock: ManualClock) -> None:
    providers = [provider("a"), provider("b")]
    board.record_failure("a", "HTTP 503", cooldown=10, kind=OVERLOADED)
    clock.advance(10)
    assert board.record_attempt("a") is True
    assert names(plan_attempts(providers, board).later) == ["a"]  # tried last while the probe runs
    plan = plan_attempts(providers, board, settings=Settings(all_cooling="refuse"))
    assert names(plan.usable) == ["b"]
    [(skipped, reason)] = plan.skipped
    assert skipped.name == "a"
    assert "probe" in reason
    assert "cooling" not in reason


def test_plan_is_a_plan_dataclass(board: HealthBoard) -> None:
    plan = Router(seed=0).plan([provider("a")], board, Settings())
    assert isinstance(plan, Plan)
    assert names(plan.usable) == ["a"] and plan.skipped == []


def test_cancelled_probe_does_not_leave_the_provider_stuck(board: HealthBoard, clock: ManualClock) -> None:
    """A request cancelled while its probe waits on a silent provider (a real loopback server that reads and
    never answers) must not leave the provider marked as being probed."""
    board.record_failure("a", "HTTP 503", cooldown=10, kind=OVERLOADED)
    clock.advance(10)

    async def run() -> None:
        connected, release = asyncio.Event(), asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")  # the request is in: the balancer waits for headers
            connected.set()
            await release.wait()
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        a = ProviderConfig(name="a", base_url=f"http://127.0.0.1:{port}", auth_value="k")
        plan = plan_attempts([a], board)
        assert names(plan.usable) == ["a"]
        pool = ClientPool()
        task = asyncio.create_task(attempt_in_turn(
            plan, lambda p: httpx.Request("POST", p.base_url + "/v1/messages"), pool, board, Settings(),
            open_answer=None))  # never reached: the provider never answers
        await asyncio.wait_for(connected.wait(), 10)
        assert board.get("a").probing
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
        await pool.aclose()
        server.close()

    asyncio.run(run())
    assert board.is_available("a")


# =====================================================================================================
# affinity.session_key / SessionAffinity
# =====================================================================================================


def test_session_key_from_json_user_id() -> None:
    user_id = json.dumps({"device_id": "d" * 64, "account_uuid": "acc-1", "session_id": "3f1c-aa-77"})
    body = {"model": "m", "metadata": {"user_id": user_id}}
    assert session_key(body, []) == "session:3f1c-aa-77"
    # the session wins over any credential
    assert session_key(body, [("x-api-key", "sk-secret")]) == "session:3f1c-aa-77"


def test_session_key_from_legacy_user_id() -> None:
    session = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
    user_id = f"user_{'ab' * 32}_account_11111111-2222-3333-4444-555555555555_session_{session}"
    assert session_key({"metadata": {"user_id": user_id}}, []) == "session:" + session


def test_session_key_sessions_differ() -> None:
    one = session_key({"metadata": {"user_id": json.dumps({"session_id": "s1"})}}, [])
    two = session_key({"metadata": {"user_id": json.dumps({"session_id": "s2"})}}, [])
    assert one != two


@pytest.mark.parametrize("user_id", ["alice@example.com", "user-42", json.dumps({"account": "x"}), "123", "{not json"])
def test_session_key_other_user_id_is_hashed(user_id: str) -> None:
    key = session_key({"metadata": {"user_id": user_id}}, [("x-api-key", "sk-secret")])
    assert key is not None and key.startswith("user:")
    assert user_id not in key
    assert key == "user:" + hashlib.sha256(user_id.encode()).hexdigest()[:24]
    assert key == session_key({"metadata": {"user_id": user_id}}, [])  # stable, independent of headers


def test_session_key_different_users_differ() -> None:
    assert session_key({"metadata": {"user_id": "alice"}}, []) != session_key({"metadata": {"user_id": "bob"}}, [])


@pytest.mark.parametrize("header", ["x-api-key", "X-Api-Key", "authorization", "Authorization"])
def test_session_key_from_credential_digest(header: str) -> None:
    credential = "Bearer sk-ant-very-secret-value" if header.lower() == "authorization" else "sk-ant-very-secret"
    key = session_key({"model": "m"}, [("content-type", "application/json"), (header, credential)])
    assert key is not None and key.startswith("client:")
    assert credential not in key
    assert "secret" not in key
    assert key == "client:" + hashlib.sha256(credential.encode()).hexdigest()[:24]


@pytest.mark.parametrize("body", [None, {}, {"metadata": None}, {"metadata": {}}, {"metadata": {"user_id": ""}},
                                  {"metadata": {"user_id": 42}}, {"metadata": "x"}])
def test_session_key_falls_back_to_credential(body: object) -> None:
    key = session_key(body, [("x-api-key", "sk-1")])  # type: ignore[arg-type]
    assert key == "client:" + hashlib.sha256(b"sk-1").hexdigest()[:24]


def test_session_key_different_credentials_differ() -> None:
    assert session_key(None, [("x-api-key", "k1")]) != session_key(None, [("x-api-key", "k2")])


def test_session_key_nothing_is_none() -> None:
    assert session_key(None, []) is None
    assert session_key({"model": "m"}, [("content-type", "application/json")]) is None
    assert session_key({"model": "m"}, [("x-api-key", ""), ("authorization", "")]) is None


def test_session_key_survives_deeply_nested_user_id() -> None:
    key = session_key({"metadata": {"user_id": "[" * 100_000}}, [])
    assert key is not None and key.startswith("user:")


def test_affinity_remember_and_provider_for(clock: ManualClock) -> None:
    affinity = SessionAffinity(clock=clock)
    assert affinity.provider_for("session:1") is None
    affinity.remember("session:1", "alpha")
    affinity.remember("session:2", "beta")
    assert affinity.provider_for("session:1") == "alpha"
    assert affinity.provider_for("session:2") == "beta"
    affinity.remember("session:1", "gamma")  # moved
    assert affinity.provider_for("session:1") == "gamma"
    assert len(affinity) == 2


def test_affinity_none_key(clock: ManualClock) -> None:
    affinity = SessionAffinity(clock=clock)
    affinity.remember(None, "alpha")
    assert len(affinity) == 0
    assert affinity.provider_for(None) is None


def test_affinity_entries_expire_after_ttl(clock: ManualClock) -> None:
    affinity = SessionAffinity(ttl=100, clock=clock)
    affinity.remember("s", "alpha")
    clock.advance(100)
    assert affinity.provider_for("s") == "alpha"  # exactly at the TTL: still valid
    clock.advance(0.001)
    assert affinity.provider_for("s") is None
    assert len(affinity) == 0  # the expired entry is dropped


def test_affinity_remember_refreshes_the_ttl(clock: ManualClock) -> None:
    affinity = SessionAffinity(ttl=100, clock=clock)
    affinity.remember("s", "alpha")
    clock.advance(80)
    affinity.remember("s", "alpha")
    clock.advance(80)
    assert affinity.provider_for("s") == "alpha"


def test_affinity_is_bounded_and_evicts_the_oldest(clock: ManualClock) -> None:
    affinity = SessionAffinity(max_entries=3, clock=clock)
    for i in range(5):
        affinity.remember(f"s{i}", f"p{i}")
        clock.advance(1)
    assert len(affinity) == 3
    assert [affinity.provider_for(f"s{i}") for i in range(5)] == [None, None, "p2", "p3", "p4"]


def test_affinity_remember_again_makes_an_entry_young(clock: ManualClock) -> None:
    affinity = SessionAffinity(max_entries=2, clock=clock)
    affinity.remember("old", "a")
    affinity.remember("mid", "b")
    affinity.remember("old", "a")  # used again: now the youngest
    affinity.remember("new", "c")
    assert affinity.provider_for("mid") is None
    assert affinity.provider_for("old") == "a"
    assert affinity.provider_for("new") == "c"


# =====================================================================================================
# stream_guard
# =====================================================================================================


MESSAGE_START = sse("message_start", {"type": "message_start", "message": {"id": "msg_1", "role": "assistant",
                                                                        "content": [], "model": "claude-x"}})
BLOCK_START = sse("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}})
PING = sse("ping", {"type": "ping"})
DELTA = sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                    "delta": {"type": "text_delta", "text": "Hello, w\u00f6rld"}})
DELTA2 = sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": " and more"}})
BLOCK_STOP = sse("content_block_stop", {"type": "content_block_stop", "index": 0})
MESSAGE_DELTA = sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                      "usage": {"output_tokens": 5}})
MESSAGE_STOP = sse("message_stop", {"type": "message_stop"})
OVERLOADED_EVENT = sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
API_ERROR_EVENT = sse("error", {"type": "error", "error": {"type": "api_error", "message": "Internal error"}})

OPENING = MESSAGE_START + BLOCK_START + PING
FULL_STREAM = OPENING + DELTA + DELTA2 + BLOCK_STOP + MESSAGE_DELTA + MESSAGE_STOP


async def chunks_of(parts: Iterable[bytes], then: BaseException | None = None) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if then is not None:
        raise then


def split_at(data: bytes, offsets: Iterable[int]) -> list[bytes]:
    cuts = [0, *sorted(set(offsets)), len(data)]
    return [data[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]


def expected_held(parts: list[bytes], commit_end: int) -> bytes:
    """The chunks up to and including the one in which byte `commit_end - 1` (the event's end) arrives."""
    out = b""
    for part in parts:
        out += part
        if len(out) >= commit_end:
            return out
    raise AssertionError("the commit event never completes")


def hold(parts: list[bytes], timeout: float = 5.0, then: BaseException | None = None) -> bytes:
    """Every byte read before the commit point was seen: the opening, the events after it, an unfinished one."""
    opening = asyncio.run(hold_until_content(chunks_of(parts, then), time.monotonic() + timeout))
    return opening.held + b"".join(opening.after) + opening.splitter.pending()


def hold_failure(parts: list[bytes], then: BaseException | None = None) -> StreamFailure:
    with pytest.raises(StreamFailure) as caught:
        hold(parts, then=then)
    return caught.value


def test_hold_returns_everything_up_to_the_first_content_delta() -> None:
    parts = [MESSAGE_START, BLOCK_START, PING, DELTA, DELTA2, MESSAGE_STOP]
    assert hold(parts) == OPENING + DELTA


def test_hold_returns_the_whole_chunk_holding_the_delta() -> None:
    parts = [OPENING, DELTA + DELTA2 + BLOCK_STOP]
    assert hold(parts) == OPENING + DELTA + DELTA2 + BLOCK_STOP


def test_hold_with_a_split_at_every_offset() -> None:
    commit_end = len(OPENING + DELTA)
    for cut in range(1, len(FULL_STREAM)):
        parts = split_at(FULL_STREAM, [cut])
        assert hold(parts) == expected_held(parts, commit_end), f"split at byte {cut}"


def test_hold_with_two_splits_around_the_delta() -> None:
    start, end = len(OPENING) - 10, len(OPENING + DELTA) + 10
    for first in range(start, end, 3):
        for second in range(first + 1, end + 5, 4):
            parts = split_at(FULL_STREAM, [first, second])
            assert hold(parts) == expected_held(parts, len(OPENING + DELTA)), f"splits at {first}, {second}"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, 64, 10_000])
def test_hold_with_chunks_of_every_size(size: int) -> None:
    parts = [FULL_STREAM[i : i + size] for i in range(0, len(FULL_STREAM), size)]
    commit_end = len(OPENING + DELTA)
    held = hold(parts)
    assert held == expected_held(parts, commit_end)
    assert held.startswith(OPENING + DELTA)


@pytest.mark.parametrize("seed", range(20))
def test_hold_with_random_splits(seed: int) -> None:
    rng = random.Random(seed)
    parts = split_at(FULL_STREAM, rng.sample(range(1, len(FULL_STREAM)), rng.randint(1, 40)))
    assert hold(parts) == expected_held(parts, len(OPENING + DELTA))


def test_hold_handles_crlf_line_ends() -> None:
    crlf = FULL_STREAM.replace(b"\n", b"\r\n")
    parts = split_at(crlf, range(3, len(crlf), 11))
    held = hold(parts)
    assert held.startswith((OPENING + DELTA).replace(b"\n", b"\r\n"))


@pytest.mark.parametrize("commit", [MESSAGE_DELTA, MESSAGE_STOP], ids=["message_delta", "message_stop"])
def test_hold_commits_on_message_delta_or_stop_without_content(commit: bytes) -> None:
    parts = [MESSAGE_START, commit, MESSAGE_STOP]
    assert hold(parts) == MESSAGE_START + commit


def test_hold_commits_on_message_delta_for_an_empty_answer() -> None:
    stream = MESSAGE_START + MESSAGE_DELTA + MESSAGE_STOP
    parts = split_at(stream, [len(MESSAGE_START) + 5])
    assert hold(parts) == expected_held(parts, len(MESSAGE_START + MESSAGE_DELTA))


@pytest.mark.parametrize("cut", [0, 1, 7, 20, 40])
def test_hold_overloaded_error_before_content(cut: int) -> None:
    stream = MESSAGE_START + OVERLOADED_EVENT
    parts = split_at(stream, [len(MESSAGE_START) + cut] if cut else [])
    failure = hold_failure(parts)
    assert failure.kind == OVERLOADED == "overloaded"
    assert "overloaded_error" in failure.reason
    assert "Overloaded" in failure.reason


def test_hold_overloaded_error_as_first_event() -> None:
    failure = hold_failure([OVERLOADED_EVENT])
    assert failure.kind == "overloaded"


def test_hold_other_error_event_before_content() -> None:
    failure = hold_failure([OPENING, API_ERROR_EVENT])
    assert failure.kind == STREAM_ERROR == "stream_error"
    assert "api_error" in failure.reason


@pytest.mark.parametrize("data", [b"not json", b"[1, 2]", b'{"error": "just a string"}', b"{}"])
def test_hold_malformed_error_event_is_a_stream_error(data: bytes) -> None:
    failure = hold_failure([MESSAGE_START, b"event: error\ndata: " + data + b"\n\n"])
    assert failure.kind == "stream_error"


def test_hold_error_event_after_content_is_not_looked_at() -> None:
    parts = [OPENING, DELTA + OVERLOADED_EVENT]
    assert hold(parts) == OPENING + DELTA + OVERLOADED_EVENT


@pytest.mark.parametrize(
    "parts", [[], [MESSAGE_START], [OPENING], [OPENING, DELTA[:-2]]], ids=["empty", "start", "opening", "unfinished"]
)
def test_hold_stream_ending_before_content(parts: list[bytes]) -> None:
    failure = hold_failure(parts)
    assert failure.kind == "stream_error"
    assert "ended" in failure.reason


def test_hold_stream_breaking_before_content() -> None:
    failure = hold_failure([MESSAGE_START], then=httpx.ReadError("connection lost"))
    assert failure.kind == "stream_error"
    assert "broke" in failure.reason


def test_hold_times_out_when_the_provider_goes_silent() -> None:
    async def silent() -> AsyncIterator[bytes]:
        yield MESSAGE_START
        await asyncio.Event().wait()  # never set: the provider says nothing more
        yield DELTA  # pragma: no cover

    async def run() -> StreamFailure:
        started = time.monotonic()
        with pytest.raises(StreamFailure) as caught:
            await hold_until_content(silent(), started + 0.05)
        assert time.monotonic() - started < 5  # bounded: the deadline, not the never-firing event, ended it
        return caught.value

    failure = asyncio.run(run())
    assert failure.kind == TIMEOUT == "timeout"
    assert "deadline" in failure.reason


def test_hold_with_a_deadline_already_past() -> None:
    async def run() -> StreamFailure:
        with pytest.raises(StreamFailure) as caught:
            await hold_until_content(chunks_of([FULL_STREAM]), time.monotonic() - 1)
        return caught.value

    assert asyncio.run(run()).kind == "timeout"


# --- CommittedStream ---------------------------------------------------------------------------------


def committed_all(parts: Iterable[bytes]) -> tuple[CommittedStream, bytes, list[tuple[str, str]]]:
    calls: list[tuple[str, str]] = []
    stream = CommittedStream(SSESplitter(), lambda reason, kind: calls.append((reason, kind)))
    out = b"".join(stream.feed(part) for part in parts)
    return stream, out, calls


def test_committed_stream_sees_no_end_in_an_opening() -> None:
    stream, out, calls = committed_all([OPENING, DELTA, DELTA2, BLOCK_STOP, MESSAGE_DELTA])
    assert not stream.complete and not stream.failed and calls == []
    assert out == OPENING + DELTA + DELTA2 + BLOCK_STOP + MESSAGE_DELTA


def test_committed_stream_message_stop_split_anywhere() -> None:
    stream = DELTA + MESSAGE_STOP
    for cut in range(1, len(stream)):
        watch, out, _ = committed_all(split_at(stream, [cut]))
        assert watch.complete, f"split at byte {cut}"
        assert not watch.failed and out == stream


def test_committed_stream_message_stop_byte_by_byte() -> None:
    stream = DELTA2 + MESSAGE_DELTA + MESSAGE_STOP
    watch, out, _ = committed_all(stream[i : i + 1] for i in range(len(stream)))
    assert watch.complete and out == stream


def test_committed_stream_message_stop_without_space() -> None:
    stream = DELTA + b'event:message_stop\ndata: {"type":"message_stop"}\n\n'
    assert committed_all(split_at(stream, [len(DELTA) + 9]))[0].complete


def test_committed_stream_overloaded_error_split_anywhere() -> None:
    stream = DELTA + OVERLOADED_EVENT
    for cut in range(1, len(stream)):
        watch, out, calls = committed_all(split_at(stream, [cut]))
        assert watch.failed and not watch.complete, f"split at byte {cut}"
        assert [kind for _, kind in calls] == ["overloaded"]


def test_committed_stream_error_byte_by_byte() -> None:
    stream = DELTA + API_ERROR_EVENT
    watch, _, calls = committed_all(stream[i : i + 1] for i in range(len(stream)))
    assert watch.failed
    assert [kind for _, kind in calls] == ["stream_error"]


@pytest.mark.parametrize("size", [2, 3, 5, 9])
def test_committed_stream_mark_split_over_several_small_chunks(size: int) -> None:
    stream = DELTA + MESSAGE_STOP
    watch, out, _ = committed_all(stream[i : i + size] for i in range(0, len(stream), size))
    assert watch.complete and out == stream


# --- guarded -----------------------------------------------------------------------------------------


class Failures:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, reason: str, kind: str) -> None:
        self.calls.append((reason, kind))


def run_guarded(held: bytes, rest: list[bytes], then: BaseException | None = None,
                idle_timeout: float = 300.0) -> tuple[list[bytes], Failures]:
    failures = Failures()

    async def collect() -> list[bytes]:
        opening = await hold_until_content(chunks_of([held]), time.monotonic() + 5)
        return [chunk async for chunk in guarded(opening, chunks_of(rest, then), failures, idle_timeout)]

    return asyncio.run(collect()), failures


def appended_error(out: bytes, prefix: bytes) -> dict:
    assert out.startswith(prefix)
    tail = out[len(prefix):]
    assert tail.startswith(b"event: error\ndata: ")
    assert tail.endswith(b"\n\n")
    return json.loads(tail[len(b"event: error\ndata: "):-2])


def test_guarded_clean_stream_passes_through_unchanged() -> None:
    held = OPENING + DELTA
    rest = [DELTA2, BLOCK_STOP, MESSAGE_DELTA[:10], MESSAGE_DELTA[10:] + MESSAGE_STOP[:5], MESSAGE_STOP[5:]]
    out, failures = run_guarded(held, rest)
    assert out == [held, DELTA2, BLOCK_STOP, MESSAGE_DELTA, MESSAGE_STOP]  # byte for byte, in whole events
    assert failures.calls == []


def test_guarded_clean_stream_entirely_held() -> None:
    out, failures = run_guarded(FULL_STREAM, [])
    assert b"".join(out) == FULL_STREAM
    assert failures.calls == []


def test_guarded_end_without_message_stop_appends_an_error() -> None:
    held = OPENING + DELTA
    rest = [DELTA2, BLOCK_STOP]
    out, failures = run_guarded(held, rest)
    assert out[: len(rest) + 1] == [held, *rest]
    error = appended_error(b"".join(out), held + b"".join(rest))
    assert error["type"] == "error"
    assert error["error"]["type"] == "api_error"
    [(reason, kind)] = failures.calls
    assert kind == "stream_error"
    assert "message_stop" in reason
    assert error["error"]["message"] == reason


def test_guarded_read_error_midway_appends_an_error() -> None:
    held = OPENING + DELTA
    rest = [DELTA2]
    out, failures = run_guarded(held, rest, then=httpx.ReadError("peer vanished"))
    error = appended_error(b"".join(out), held + DELTA2)
    [(reason, kind)] = failures.calls
    assert kind == "stream_error"
    assert "broke off" in reason
    assert error["error"]["message"] == reason


def test_guarded_remote_protocol_error_midway_appends_an_error() -> None:
    out, failures = run_guarded(OPENING + DELTA, [], then=httpx.RemoteProtocolError("incomplete chunked read"))
    appended_error(b"".join(out), OPENING + DELTA)
    [(reason, kind)] = failures.calls
    assert kind == "stream_error"
    assert "closed" in reason or "broke" in reason


def test_guarded_idle_timeout_appends_an_error() -> None:
    held = OPENING + DELTA
    out, failures = run_guarded(held, [DELTA2], then=httpx.ReadTimeout("read timed out"), idle_timeout=42)
    error = appended_error(b"".join(out), held + DELTA2)
    [(reason, kind)] = failures.calls
    assert kind == "stream_error"
    assert "idle" in reason
    assert "42s" in reason
    assert error["error"]["message"] == reason


@pytest.mark.parametrize("cut", [0, 3, 15, 30])
def test_guarded_provider_overloaded_error_midstream_adds_nothing(cut: int) -> None:
    held = OPENING + DELTA
    rest = split_at(DELTA2 + OVERLOADED_EVENT, [len(DELTA2) + cut] if cut else [])
    out, failures = run_guarded(held, rest)
    error = appended_error(b"".join(out), held + DELTA2)  # the provider's own error ends the stream
    assert error == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert failures.calls == [("error event mid-stream: overloaded_error: Overloaded", "overloaded")]


def test_guarded_provider_other_error_midstream_adds_nothing() -> None:
    held = OPENING + DELTA
    out, failures = run_guarded(held, [API_ERROR_EVENT])
    error = appended_error(b"".join(out), held)
    assert error == {"type": "error", "error": {"type": "api_error", "message": "Internal error"}}
    assert failures.calls == [("error event mid-stream: api_error: Internal error", "stream_error")]


def test_guarded_clean_stream_calls_nothing() -> None:
    out, failures = run_guarded(OPENING + DELTA, [DELTA2, BLOCK_STOP, MESSAGE_DELTA, MESSAGE_STOP])
    assert b"".join(out) == FULL_STREAM
    assert failures.calls == []


def test_guarded_text_mentioning_an_error_event_is_not_a_failure() -> None:
    text = sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": "the server sends event: error then"}})
    out, failures = run_guarded(OPENING + DELTA, [text, BLOCK_STOP, MESSAGE_DELTA, MESSAGE_STOP])
    assert failures.calls == []


def test_guarded_text_mentioning_message_stop_does_not_hide_a_truncation() -> None:
    text = sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": "it ends with event: message_stop"}})
    out, failures = run_guarded(OPENING + DELTA, [text])
    assert [kind for _, kind in failures.calls] == ["stream_error"]
    appended_error(b"".join(out), OPENING + DELTA + text)


def test_guarded_break_after_message_stop_is_not_a_failure() -> None:
    out, failures = run_guarded(OPENING + DELTA, [MESSAGE_DELTA, MESSAGE_STOP],
                                then=httpx.RemoteProtocolError("peer closed connection"))
    assert b"".join(out) == OPENING + DELTA + MESSAGE_DELTA + MESSAGE_STOP
    assert failures.calls == []


def test_affinity_does_not_override_a_better_priority_tier(board: HealthBoard) -> None:
    main = ProviderConfig(name="main", base_url="https://m.example", auth_value="k", priority=1)
    backup = ProviderConfig(name="backup", base_url="https://b.example", auth_value="k", priority=2)
    other = ProviderConfig(name="other", base_url="https://o.example", auth_value="k", priority=1)
    assert names(plan_attempts([main, backup], board, preferred="backup").usable) == ["main", "backup"]
    assert names(plan_attempts([main, other, backup], board, preferred="other").usable) == ["other", "main", "backup"]
    board.record_failure("main", "HTTP 500", cooldown=60)
    assert names(plan_attempts([main, backup], board, preferred="backup").usable) == ["backup"]


def test_a_stale_failure_counts_but_does_not_lengthen_the_streak(board: HealthBoard) -> None:
    started = board.get("a").failure_epoch  # two requests start on "a" at the same time
    board.record_failure("a", "HTTP 500", cooldown=60, kind=SERVER_ERROR, epoch=started)
    board.record_failure("a", "HTTP 500", cooldown=600, kind=SERVER_ERROR, epoch=started)
    health = board.get("a")
    assert (health.failures, health.consecutive_failures) == (2, 1)
    assert board.cooldown_remaining("a") == 60
