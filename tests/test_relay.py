"""The loopback relay on its own: a parked response is written out chunk by chunk, exactly once."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from addon import relay as relay_module
from addon.relay import PATH_PREFIX, Parked, RelayServer


class Body:
    """A provider body whose chunks the test releases one at a time."""

    def __init__(self, chunks: list[bytes], fail_after: int | None = None):
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.chunks = chunks
        self.fail_after = fail_after
        self.closed = asyncio.Event()
        self.read = asyncio.Event()  # the relay has started reading it

    async def iterate(self) -> AsyncIterator[bytes]:
        self.read.set()
        for i, chunk in enumerate(self.chunks):
            if self.fail_after is not None and i == self.fail_after:
                raise httpx.ReadError("provider went away")
            yield chunk

    async def close(self) -> None:
        self.closed.set()


def parked(body: Body, is_sse: bool = True, status: int = 200) -> Parked:
    headers = [("content-type", "text/event-stream" if is_sse else "application/json"), ("x-balancer-provider", "p")]
    return Parked(status, headers, body.iterate(), body.close, is_sse=is_sse)


async def fetch(relay: RelayServer, token: str, client: httpx.AsyncClient) -> httpx.Response:
    return await client.post(f"http://127.0.0.1:{relay.port}{PATH_PREFIX}{token}", content=b"")


@pytest.fixture
def run():
    def runner(coro):
        return asyncio.run(asyncio.wait_for(coro, 20))
    return runner


def test_parked_response_is_served_once_then_gone(run):
    async def scenario():
        relay = RelayServer()
        await relay.start()
        body = Body([b"event: a\ndata: {}\n\n", b"event: b\ndata: {}\n\n"])
        token = relay.park(parked(body))
        async with httpx.AsyncClient() as client:
            first = await fetch(relay, token, client)
            again = await fetch(relay, token, client)  # same keep-alive connection
        await relay.stop()
        return first, again, body, relay

    first, again, body, relay = run(scenario())
    assert first.status_code == 200
    assert first.headers["x-balancer-provider"] == "p"
    assert first.headers["transfer-encoding"] == "chunked"
    assert first.content == b"event: a\ndata: {}\n\nevent: b\ndata: {}\n\n"
    assert again.status_code == 410
    assert body.closed.is_set()
    assert relay.open_count == 0


def test_provider_breaking_off_mid_stream_ends_with_an_error_event(run):
    async def scenario():
        relay = RelayServer()
        await relay.start()
        body = Body([b"event: message_start\ndata: {}\n\n", b"never sent"], fail_after=1)
        token = relay.park(parked(body))
        async with httpx.AsyncClient() as client:
            response = await fetch(relay, token, client)
        await relay.stop()
        return response

    response = run(scenario())
    text = response.text
    assert text.startswith("event: message_start")
    assert text.endswith("\n\n")
    assert "event: error" in text and '"type": "api_error"' in text


def test_non_stream_body_breaking_off_drops_the_connection(run):
    async def scenario():
        relay = RelayServer()
        await relay.start()
        token = relay.park(parked(Body([b'{"partial":', b"x"], fail_after=1), is_sse=False))
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.HTTPError):
                await fetch(relay, token, client)
        await relay.stop()

    run(scenario())


def test_unclaimed_responses_are_closed_after_the_ttl(run):
    async def scenario():
        relay = RelayServer(ttl=0.0)
        await relay.start()
        body = Body([b"x"])
        relay.park(parked(body))
        await asyncio.sleep(0)  # the parked entry is now older than a TTL of zero
        await relay.reap()
        count = relay.open_count
        await relay.stop()
        return body, count

    body, count = run(scenario())
    assert count == 0
    assert body.closed.is_set()


def test_discard_closes_a_parked_response(run):
    async def scenario():
        relay = RelayServer()
        await relay.start()
        body = Body([b"x"])
        token = relay.park(parked(body))
        await relay.discard(token)
        async with httpx.AsyncClient() as client:
            response = await fetch(relay, token, client)
        await relay.stop()
        return body, response

    body, response = run(scenario())
    assert body.closed.is_set()
    assert response.status_code == 410


async def _read_some(reader: asyncio.StreamReader, wait: float) -> bytes:
    """Whatever arrives within `wait` seconds."""
    data = b""
    try:
        async with asyncio.timeout(wait):
            while True:
                more = await reader.read(65536)
                if not more:
                    return data
                data += more
    except TimeoutError:
        return data


def test_a_streams_opening_goes_out_first_and_the_rest_waits_until_it_was_passed_on(run):
    opening = b"event: message_start\ndata: {}\n\nevent: content_block_delta\ndata: {}\n\n"
    rest = [b"event: content_block_delta\ndata: {\"n\": 2}\n\n", b"event: message_stop\ndata: {}\n\n"]

    async def scenario():
        relay = RelayServer()
        await relay.start()
        body = Body([opening, *rest])  # the provider sent it all at once
        item = parked(body)
        handoff = await relay.hand_off(item.status, item.headers, item.body, item.close, is_sse=True, streamed=True)
        token = handoff.token
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(f"POST {PATH_PREFIX}{token} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n".encode())
        first = await _read_some(reader, 0.2)
        assert handoff.stream is not None
        handoff.stream(opening)  # mitmproxy passed the opening on (the hand-off's stream callable)
        later = await _read_some(reader, 0.2)
        writer.close()
        await relay.stop()
        return first, later

    first, later = run(scenario())
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert first.endswith(b"%x\r\n%b\r\n" % (len(opening), opening))  # the opening alone, nothing after it
    # What was ready meanwhile follows as one chunk, then the end.
    assert later == b"%x\r\n%b\r\n0\r\n\r\n" % (len(b"".join(rest)), b"".join(rest))


def test_a_discarded_stream_does_not_keep_the_relay_waiting(run, monkeypatch):
    monkeypatch.setattr(relay_module, "_FORWARD_WAIT", 60.0)  # the safety net, far beyond any wait here

    async def scenario():
        relay = RelayServer()
        await relay.start()
        body = Body([b"event: message_start\ndata: {}\n\n", b"event: message_stop\ndata: {}\n\n"])
        item = parked(body)
        # Its stream callable is never called: the flow ended before mitmproxy passed anything on.
        handoff = await relay.hand_off(item.status, item.headers, item.body, item.close, is_sse=True, streamed=True)
        token = handoff.token
        async with httpx.AsyncClient() as client:
            task = asyncio.create_task(fetch(relay, token, client))
            await asyncio.wait_for(body.read.wait(), 10)  # the relay serves it and waits for it to be passed on
            started = asyncio.get_running_loop().time()
            await relay.discard(token)
            await task
            waited = asyncio.get_running_loop().time() - started
        await relay.stop()
        return waited, body

    waited, body = run(scenario())
    assert waited < 30  # not the relay's safety net
    assert body.closed.is_set()


def test_the_relay_turns_nagles_algorithm_off_on_the_connections_it_accepts(run):
    # With it on, a stream's second small write waited for mitmproxy's delayed ACK: about 40 ms before the second
    # text delta of nearly every stream.
    async def scenario() -> int:
        relay = RelayServer()
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        with listener, socket.create_connection(listener.getsockname()) as client:
            conn, _ = await asyncio.get_running_loop().sock_accept(listener)
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # as accepted
            serving = asyncio.create_task(relay._serve_socket(conn))
            await asyncio.sleep(0)  # the relay takes the connection
            nodelay = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            client.shutdown(socket.SHUT_WR)
            await serving
        await relay.stop()
        return nodelay

    assert run(scenario()) != 0
