"""The usage exchange of shared state (addon/usage_sync.py) against a real Valkey server: each instance writes its
own totals, so a write retried after a failure counts nothing twice, and the next sync after the server lost its
data makes the counts whole again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from addon.shared_records import Keys
from addon.usage_sync import UsageRound, UsageSync, slot_of
from addon.usage_windows import DAY, MINUTE, UsageWindows
from benchkit.kv_server import KeyValueServer, server_binary

pytestmark = pytest.mark.skipif(server_binary() is None, reason="no Redis-compatible server here")

SUBJECT = "client:alice"


@pytest.fixture
def t0() -> float:
    """Now, taken when the test starts (the server expires what it holds at the windows' real ends)."""
    return time.time()


@pytest.fixture(scope="module")
def kv() -> Iterator[KeyValueServer]:
    with KeyValueServer() as server:
        yield server


def run(kv: KeyValueServer, turn: UsageRound, usage: UsageWindows, *commands: tuple[str, ...]) -> None:
    """One sync round through a real pipeline (after `commands`, sent as they are)."""
    from valkey.asyncio import Valkey

    async def go() -> None:
        client = Valkey.from_url(kv.url)
        try:
            for command in commands:
                await client.execute_command(*command)
            pipe = client.pipeline(transaction=False)
            turn.queue(pipe)
            replies: list[Any] = await pipe.execute()
            turn.learn(replies, usage)
        finally:
            await client.aclose()

    asyncio.run(go())


def instance(name: str, namespace: str, t0: float) -> tuple[UsageSync, UsageWindows]:
    return UsageSync(Keys(namespace), name), UsageWindows(clock=lambda: t0)


def daily(t0: float) -> list[tuple[tuple[str, str, str], float]]:
    return [slot_of(SUBJECT, "tokens", DAY, t0)]


def test_a_retried_sync_counts_nothing_twice(kv: KeyValueServer, t0: float) -> None:
    (sync_a, a), (sync_b, b) = instance("a", "retry", t0), instance("b", "retry", t0)
    a.add(SUBJECT, "tokens", DAY, 1800)
    turn = sync_a.exchange(a, daily(t0), [], t0)
    run(kv, turn, a)
    run(kv, turn, a)  # the same round again, as after a reply that never came
    a.add(SUBJECT, "tokens", DAY, 200)
    run(kv, sync_a.exchange(a, daily(t0), [], t0), a)
    run(kv, sync_b.exchange(b, daily(t0), [], t0), b)
    assert b.used(SUBJECT, "tokens", DAY) == 2000
    assert a.used(SUBJECT, "tokens", DAY) == 2000  # its own count is not read back on top of itself


def test_the_next_sync_after_the_server_lost_its_data_restores_the_totals(kv: KeyValueServer, t0: float) -> None:
    (sync_a, a), (sync_b, b) = instance("a", "lost", t0), instance("b", "lost", t0)
    a.add(SUBJECT, "tokens", DAY, 1800)
    b.add(SUBJECT, "tokens", DAY, 1800)
    run(kv, sync_a.exchange(a, daily(t0), [], t0), a)
    run(kv, sync_b.exchange(b, daily(t0), [], t0), b)
    run(kv, sync_a.exchange(a, daily(t0), [], t0), a, ("FLUSHALL",))  # restarted empty, then a syncs
    run(kv, sync_b.exchange(b, daily(t0), [], t0), b)
    run(kv, sync_a.exchange(a, daily(t0), [], t0), a)
    newcomer_sync, newcomer = instance("c", "lost", t0)  # knows nothing but what the server holds
    run(kv, newcomer_sync.exchange(newcomer, daily(t0), [], t0), newcomer)
    assert [w.used(SUBJECT, "tokens", DAY) for w in (a, b, newcomer)] == [3600, 3600, 3600]


def test_open_requests_of_others_are_learned_and_unlearned(kv: KeyValueServer, t0: float) -> None:
    (sync_a, a), (sync_b, b) = instance("a", "open", t0), instance("b", "open", t0)
    key = "key:p#1"
    a.opened(key)
    run(kv, sync_a.exchange(a, [], [], t0), a)
    run(kv, sync_b.exchange(b, [], [key], t0), b)  # b watches the key without having anything open itself
    assert b.open_now(key) == 1
    a.closed(key)
    run(kv, sync_a.exchange(a, [], [], t0), a)  # its field goes
    run(kv, sync_b.exchange(b, [], [key], t0), b)
    assert b.open_now(key) == 0
    a.opened(key)
    run(kv, sync_a.exchange(a, [], [], t0), a)
    run(kv, sync_b.exchange(b, [], [key], t0), b)
    assert b.open_now(key) == 1
    run(kv, sync_b.exchange(b, [], [], t0), b)  # no longer watched: not kept for ever
    assert b.open_now(key) == 0


def test_a_minute_window_is_read_even_where_nothing_was_counted(kv: KeyValueServer, t0: float) -> None:
    (sync_a, a), (sync_b, b) = instance("a", "minute", t0), instance("b", "minute", t0)
    a.add("key:p#1", "requests", MINUTE, 3)
    run(kv, sync_a.exchange(a, [], [], t0), a)
    run(kv, sync_b.exchange(b, [slot_of("key:p#1", "requests", MINUTE, t0)], [], t0), b)
    assert b.used("key:p#1", "requests", MINUTE) == 3
