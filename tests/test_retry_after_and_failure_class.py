"""What a provider's failed answer says: how long to wait (failover.parse_retry_after) and which class of
failure it is (failover.failure_class)."""

from __future__ import annotations

import email.utils

import pytest

from addon.failover import RETRY_AFTER_CEILING, failure_class, parse_retry_after
from addon.health import AUTH, OVERLOADED, RATE_LIMITED, SERVER_ERROR

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
def test_failure_class_follows_the_status_and_an_overload_in_the_detail(
    status: int, detail: str, expected: str,
) -> None:
    assert failure_class(status, detail) == expected


def test_failure_class_status_beats_detail_for_auth_and_rate_limits() -> None:
    assert failure_class(401, "overloaded_error: Overloaded") == AUTH
    assert failure_class(429, "overloaded_error: Overloaded") == RATE_LIMITED
