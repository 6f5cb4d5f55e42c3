"""Rate-limit headers read into limits and resets (addon/ratelimit_headers.py), with header sets as providers send
them, and the headroom rule applied to them."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st

from addon.ratelimit_headers import (
    DEFAULT_HOLD,
    HIGH_UTILIZATION,
    LIMIT_REJECTED,
    LOW_HEADROOM,
    RESET_CEILING,
    parse_duration,
    parse_reset,
    read_headers,
    shortfall,
    window_ceiling,
)
from fuzzing import quick_and_deep

NOW = 1_764_633_600.0  # 2025-12-02T00:00:00Z

# An Anthropic API key's answer (the shape of api.anthropic.com's headers).
ANTHROPIC_KEY = [
    ("anthropic-ratelimit-requests-limit", "4000"),
    ("anthropic-ratelimit-requests-remaining", "3999"),
    ("anthropic-ratelimit-requests-reset", "2025-12-02T00:00:01Z"),
    ("anthropic-ratelimit-input-tokens-limit", "2000000"),
    ("anthropic-ratelimit-input-tokens-remaining", "60000"),
    ("anthropic-ratelimit-input-tokens-reset", "2025-12-02T00:00:30Z"),
    ("anthropic-ratelimit-output-tokens-limit", "400000"),
    ("anthropic-ratelimit-output-tokens-remaining", "400000"),
    ("anthropic-ratelimit-output-tokens-reset", "2025-12-02T00:00:00Z"),
    ("anthropic-ratelimit-tokens-limit", "2400000"),
    ("anthropic-ratelimit-tokens-remaining", "460000"),
    ("anthropic-ratelimit-tokens-reset", "2025-12-02T00:00:00Z"),
    ("request-id", "req_011CV"),
]
# A subscription's answer (Claude Code logged in with an account).
SUBSCRIPTION = [
    ("anthropic-ratelimit-unified-status", "allowed_warning"),
    ("anthropic-ratelimit-unified-reset", "1764648000"),
    ("anthropic-ratelimit-unified-5h-status", "allowed_warning"),
    ("anthropic-ratelimit-unified-5h-utilization", "0.93"),
    ("anthropic-ratelimit-unified-5h-reset", "1764648000"),
    ("anthropic-ratelimit-unified-7d-status", "allowed"),
    ("anthropic-ratelimit-unified-7d-utilization", "0.41"),
    ("anthropic-ratelimit-unified-7d-reset", "1765152000"),
    ("anthropic-ratelimit-unified-representative-claim", "five_hour"),
    ("anthropic-ratelimit-unified-fallback-percentage", "0.5"),
    ("anthropic-ratelimit-unified-overage-status", "rejected"),
    ("anthropic-ratelimit-unified-overage-reset", "1767225600"),
]
# OpenAI's (and OpenRouter-style compatible servers') answer.
OPENAI = [
    ("x-ratelimit-limit-requests", "10000"),
    ("x-ratelimit-limit-tokens", "30000000"),
    ("x-ratelimit-remaining-requests", "9999"),
    ("x-ratelimit-remaining-tokens", "29999000"),
    ("x-ratelimit-reset-requests", "6ms"),
    ("x-ratelimit-reset-tokens", "6m0s"),
]


def test_anthropic_key_headers_give_each_limit_and_the_tightest():
    reading = read_headers(ANTHROPIC_KEY, NOW)
    assert reading is not None and reading.source == "anthropic"
    limits = {b.name: b for b in reading.budgets}
    assert set(limits) == {"requests", "tokens", "input-tokens", "output-tokens"}
    assert limits["input-tokens"].share == pytest.approx(0.03)
    assert limits["input-tokens"].reset_at == NOW + 30
    assert reading.tightest is limits["input-tokens"]
    short = shortfall(reading, NOW, headroom=0.05, utilization=0.9)
    assert short is not None and (short.reason, short.budget, short.until) == (LOW_HEADROOM, "input-tokens", NOW + 30)
    assert shortfall(reading, NOW, headroom=0.02, utilization=0.9) is None
    assert shortfall(reading, NOW + 30, headroom=0.05, utilization=0.9) is None  # its window reset


def test_subscription_headers_warn_above_the_utilization_and_overage_is_not_a_limit():
    reading = read_headers(SUBSCRIPTION, NOW)
    assert reading is not None and reading.source == "anthropic-unified"
    windows = {b.name: b for b in reading.budgets}
    assert set(windows) == {"unified", "5h", "7d"}  # no overage, claim or fallback
    assert windows["5h"].utilization == 0.93 and windows["5h"].reset_at == 1764648000
    assert windows["7d"].share == pytest.approx(0.59)
    short = shortfall(reading, NOW, headroom=0.05, utilization=0.9)
    assert short is not None and (short.reason, short.budget, short.until) == (HIGH_UTILIZATION, "5h", 1764648000)
    assert shortfall(reading, NOW, headroom=0.05, utilization=0.95) is None


def test_a_rejected_subscription_holds_until_its_reset():
    headers = [("anthropic-ratelimit-unified-status", "rejected"), ("anthropic-ratelimit-unified-reset", "1764640800")]
    reading = read_headers(headers, NOW)
    assert reading is not None
    short = shortfall(reading, NOW, 0.05, 0.9)
    assert short is not None and (short.reason, short.until) == (LIMIT_REJECTED, 1764640800)
    assert shortfall(reading, 1764640800, 0.05, 0.9) is None


def test_openai_headers_with_durations():
    reading = read_headers(OPENAI, NOW)
    assert reading is not None and reading.source == "openai"
    limits = {b.name: b for b in reading.budgets}
    assert limits["requests"].reset_at == pytest.approx(NOW + 0.006)
    assert limits["tokens"].reset_at == NOW + 360
    assert limits["tokens"].remaining == 29999000
    low = read_headers([("x-ratelimit-limit-tokens", "1000"), ("x-ratelimit-remaining-tokens", "10")], NOW)
    assert low is not None
    short = shortfall(low, NOW, 0.05, 0.9)
    assert short is not None and short.until == NOW + DEFAULT_HOLD  # no reset said: held a while


def test_answers_without_rate_limit_headers_and_nonsense_values():
    assert read_headers([("content-type", "application/json")], NOW) is None
    reading = read_headers([("anthropic-ratelimit-requests-remaining", "lots"),
                            ("anthropic-ratelimit-requests-limit", "-4"),
                            ("anthropic-ratelimit-requests-reset", "tomorrow")], NOW)
    assert reading is not None and reading.tightest is None
    assert shortfall(reading, NOW, 0.05, 0.9) is None


@pytest.mark.parametrize(("text", "seconds"), [
    ("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0s", 0.0),
    ("", None), ("1x", None), ("s", None), ("1s 2s", None),
])
def test_durations(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_resets_in_every_form_and_never_beyond_the_ceiling():
    assert parse_reset("2025-12-02T00:01:00Z", NOW) == NOW + 60
    assert parse_reset("2025-12-02T01:01:00+01:00", NOW) == NOW + 60
    assert parse_reset("1764633660", NOW) == NOW + 60  # Unix seconds
    assert parse_reset("60", NOW) == NOW + 60  # seconds from now
    assert parse_reset("1m", NOW) == NOW + 60
    assert parse_reset("2025-12-02T00:01:00", NOW) is None  # no zone: which time is it?
    assert parse_reset("1764633660000", NOW) == NOW + 60  # Unix milliseconds
    assert parse_reset("9999999999", NOW) is None  # beyond any ceiling: not believed
    assert parse_reset("4m", NOW, ceiling=300) == NOW + 240
    assert parse_reset("6m", NOW, ceiling=300) is None


def test_window_ceilings_are_their_length():
    assert (window_ceiling("5h"), window_ceiling("7d"), window_ceiling("7d_opus")) == (5 * 3600, 7 * 86400, 7 * 86400)
    assert window_ceiling("unified") == window_ceiling("30d") == RESET_CEILING


@pytest.mark.parametrize("headers", [
    [("x-ratelimit-limit-requests", "100"), ("x-ratelimit-remaining-requests", "0"),
     ("x-ratelimit-reset-requests", "99999999h")],
    [("anthropic-ratelimit-tokens-limit", "100"), ("anthropic-ratelimit-tokens-remaining", "0"),
     ("anthropic-ratelimit-tokens-reset", "2025-12-02T00:11:00Z")],  # a per-minute bucket 11 minutes away
    [("anthropic-ratelimit-unified-5h-status", "rejected"),
     ("anthropic-ratelimit-unified-5h-reset", str(NOW + 6 * 3600))],
    [("anthropic-ratelimit-unified-status", "rejected"),
     ("anthropic-ratelimit-unified-reset", str(NOW + 8 * 86400))],
])
def test_a_reset_too_far_away_is_unknown_and_holds_the_key_only_briefly(headers):
    reading = read_headers(headers, NOW)
    assert reading is not None and all(b.reset_at is None for b in reading.budgets)
    short = shortfall(reading, NOW, 0.05, 0.9)
    assert short is not None and short.until == NOW + DEFAULT_HOLD
    assert shortfall(reading, NOW + DEFAULT_HOLD, 0.05, 0.9) is None  # then the key is tried again


@pytest.mark.parametrize(("headers", "reset_in"), [
    ([("x-ratelimit-limit-requests", "100"), ("x-ratelimit-remaining-requests", "0"),
      ("x-ratelimit-reset-requests", "4m30s")], 270),
    ([("anthropic-ratelimit-unified-5h-status", "rejected"),
      ("anthropic-ratelimit-unified-5h-reset", str(int(NOW) + 4 * 3600))], 4 * 3600),
    ([("anthropic-ratelimit-unified-7d-status", "rejected"),
      ("anthropic-ratelimit-unified-7d-reset", str(int(NOW) + 6 * 86400))], 6 * 86400),
])
def test_a_reset_within_its_window_holds_until_then(headers, reset_in):
    reading = read_headers(headers, NOW)
    assert reading is not None
    short = shortfall(reading, NOW, 0.05, 0.9)
    assert short is not None and short.until == NOW + reset_in


HEADER_NAMES = [
    "anthropic-ratelimit-requests-limit", "anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-unified-status", "anthropic-ratelimit-unified-5h-utilization",
    "anthropic-ratelimit-unified-7d-reset", "x-ratelimit-reset-tokens", "x-ratelimit-remaining-requests",
    "x-ratelimit-limit-requests",
]


@quick_and_deep(
    300,
    headers=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), st.text(max_size=30)), max_size=12),
    headroom=st.floats(0, 1),
    utilization=st.floats(0, 1),
)
def test_any_header_values_give_a_reading_or_none_and_never_raise(headers, headroom, utilization):
    reading = read_headers(headers, NOW)
    if reading is None:
        return
    for budget in reading.budgets:
        assert budget.share is None or 0.0 <= budget.share <= 1.0
        assert budget.reset_at is None or budget.reset_at <= NOW + RESET_CEILING
    short = shortfall(reading, NOW, headroom, utilization)
    assert short is None or short.until > NOW
