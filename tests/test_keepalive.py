"""Pings: a ping after each silent interval, none before the stream's first write, none after stop."""

from __future__ import annotations

import asyncio

from addon.anthropic_events import PING
from addon.keepalive import Pings

INTERVAL = 0.02


async def until(condition, what: str, limit: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(INTERVAL / 4)


def test_silence_after_the_first_write_brings_pings_until_stop():
    async def run() -> tuple[list[bytes], int, int]:
        sent: list[bytes] = []
        pings = Pings(sent.append, INTERVAL)
        await asyncio.sleep(3 * INTERVAL)
        before_first_write = len(sent)
        pings.heard()
        await until(lambda: len(sent) >= 2, "two pings")
        pings.stop()
        stopped_at = len(sent)
        pings.heard()  # a write after the end (the relay's closing bytes) starts nothing again
        await asyncio.sleep(3 * INTERVAL)
        return sent, before_first_write, stopped_at

    sent, before_first_write, stopped_at = asyncio.run(run())
    assert before_first_write == 0
    assert set(sent) == {PING}
    assert len(sent) == stopped_at
