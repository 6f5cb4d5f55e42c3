"""The health board (health.HealthBoard): probes after a cooldown, successes, latency, auth forgiveness and
failure classes. A manual clock, no network."""

from __future__ import annotations

import pytest

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
)
from clock import ManualClock


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


def test_failures_are_counted_by_class_and_in_total(board: HealthBoard) -> None:
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
