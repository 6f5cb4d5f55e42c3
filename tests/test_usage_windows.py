"""The per-subject usage windows behind key limits and client quotas (addon/usage_windows.py)."""

import calendar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from addon.usage_windows import DAY, MINUTE, MONTH, UsageWindows, Window

T0 = float(calendar.timegm((2026, 12, 31, 23, 59, 30)))


def test_windows_start_and_end_on_their_boundaries() -> None:
    assert MINUTE.bounds(T0) == (T0 - 30, T0 + 30)
    assert DAY.bounds(T0) == (T0 - 86370, T0 + 30)
    start, end = MONTH.bounds(T0)
    assert start == calendar.timegm((2026, 12, 1, 0, 0, 0))
    assert end == calendar.timegm((2027, 1, 1, 0, 0, 0))  # December rolls over into the next year
    with pytest.raises(ValueError):
        Window("fortnight").bounds(T0)


@given(st.floats(min_value=0, max_value=4e9), st.sampled_from([MINUTE, DAY, MONTH]))
def test_a_moment_lies_in_its_window(now: float, window: Window) -> None:
    start, end = window.bounds(now)
    assert start <= now < end


def test_amounts_count_in_the_current_window_only() -> None:
    windows = UsageWindows(clock=lambda: T0)
    windows.add("client:alice", "tokens", MINUTE, 100)
    windows.add("client:alice", "tokens", MINUTE, 50)
    windows.add("client:bob", "tokens", MINUTE, 7)
    assert windows.used("client:alice", "tokens", MINUTE) == 150
    assert windows.used("client:alice", "tokens", MINUTE, now=T0 + 31) == 0  # the next minute starts afresh
    assert windows.used("client:alice", "requests", MINUTE) == 0
    assert windows.resets_in(MINUTE) == 30


def test_totals_of_other_instances_add_to_this_ones() -> None:
    windows = UsageWindows(clock=lambda: T0)
    windows.add("key:p#1", "requests", MINUTE, 1)
    [(slot, total, end)] = windows.counted()
    assert (total, end) == (1, T0 + 30)
    windows.add("key:p#1", "requests", MINUTE, 1)
    assert windows.counted() == [(slot, 2, T0 + 30)]  # the whole total every time: a retried write adds nothing
    windows.learn_others(slot, {"b": 5, "c": 6}, T0 + 30)
    assert windows.used("key:p#1", "requests", MINUTE) == 13
    assert windows.used("key:p#1", "requests", MINUTE, now=T0 + 31) == 0
    assert windows.counted(now=T0 + 31) == []  # an ended window is not written any more


def test_a_server_that_lost_its_data_lowers_no_count() -> None:
    windows = UsageWindows(clock=lambda: T0)
    slot = ("client:alice", "tokens", DAY.ident(T0))
    windows.learn_others(slot, {"b": 1800}, T0 + 30)  # never counted here, learned all the same
    assert windows.used("client:alice", "tokens", DAY) == 1800
    windows.learn_others(slot, {}, T0 + 30)  # restarted empty: b has not written again yet
    windows.learn_others(slot, {"b": 900, "c": 10}, T0 + 30)
    assert windows.used("client:alice", "tokens", DAY) == 1810
    windows.learn_others(slot, {"b": 2000}, T0 + 30)
    assert windows.used("client:alice", "tokens", DAY) == 2010


def test_open_requests_here_and_elsewhere() -> None:
    windows = UsageWindows(clock=lambda: T0)
    windows.opened("key:p#1")
    windows.opened("key:p#1")
    windows.closed("key:p#1")
    windows.learn_open_elsewhere({"key:p#1": 3, "key:p#2": 2})
    assert (windows.open_here("key:p#1"), windows.open_now("key:p#1"), windows.open_now("key:p#2")) == (1, 4, 2)
    windows.closed("key:p#1")
    windows.closed("key:p#1")  # never below zero
    windows.learn_open_elsewhere({"key:p#1": 0})  # what is left out is no longer open elsewhere either
    assert windows.open_now("key:p#1") == 0 and windows.open_now("key:p#2") == 0
    assert windows.open_subjects() == {}


def test_ended_windows_are_forgotten() -> None:
    now = [T0]
    windows = UsageWindows(clock=lambda: now[0])
    for i in range(100):
        windows.add(f"client:{i}", "requests", MINUTE, 1)
    now[0] += 120
    windows.add("client:x", "requests", MINUTE, 1)
    assert windows.used("client:0", "requests", MINUTE, now=T0) == 0
    assert windows.used("client:x", "requests", MINUTE) == 1
    assert [slot for slot, _, _ in windows.counted()] == [("client:x", "requests", MINUTE.ident(T0 + 120))]
