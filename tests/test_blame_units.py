"""Unit tests for blaming the right party: a client that leaves while a provider is asked (failover.py)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from addon.config import ProviderConfig, Settings
from addon.failover import CLIENT_GONE, Exhausted, attempt_in_turn
from addon.health import HealthBoard
from addon.routing import plan_attempts
from addon.upstream import ClientPool
from clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def board(clock: ManualClock) -> HealthBoard:
    return HealthBoard(clock=clock, wall=ManualClock(now=1_700_000_000.0))


def provider(name: str, url: str | None = None) -> ProviderConfig:
    return ProviderConfig(name=name, base_url=url or f"https://{name}.example.com", auth_value="k")


# -- a client that leaves --------------------------------------------------------------------------------------

def test_a_client_leaving_cancels_the_attempt_closes_its_connection_and_blames_nobody(board: HealthBoard) -> None:
    async def run() -> tuple[Exhausted, bool]:
        connected, closed = asyncio.Event(), asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")  # the request is in: the balancer waits for headers
            connected.set()
            if await reader.read() == b"":  # nothing more comes until the balancer closes the connection
                closed.set()
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        a, b = provider("a", f"http://127.0.0.1:{port}"), provider("b", "http://127.0.0.1:9")
        pool = ClientPool()
        gone = False
        task = asyncio.create_task(attempt_in_turn(
            plan_attempts([a, b], board), lambda p: httpx.Request("POST", p.base_url + "/v1/messages"), pool, board,
            Settings(request_timeout=60), open_answer=None, client_gone=lambda: gone))  # type: ignore[arg-type]
        await asyncio.wait_for(connected.wait(), 10)
        gone = True
        result = await asyncio.wait_for(task, 10)
        released = await asyncio.wait_for(closed.wait(), 10)
        await pool.aclose()
        server.close()
        return result, released  # type: ignore[return-value]

    result, released = asyncio.run(run())
    assert released
    assert isinstance(result, Exhausted) and result.client_gone
    [record] = result.attempts  # b was never asked
    assert (record.provider, record.outcome, record.failed, record.kind) == ("a", CLIENT_GONE, False, None)
    health = board.get("a")
    assert (health.requests, health.failures, health.probing) == (1, 0, False)
    assert board.is_available("a")
