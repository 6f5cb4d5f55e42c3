"""The balancer's own HTTP/1.1 client for `http://` providers (addon/http1_transport.py), against raw servers on
127.0.0.1: framing, keeping and not keeping connections, and what a broken or hostile server gets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from addon import http1_transport
from addon.http1_transport import HEAD_LIMIT, Http1Transport
from addon.upstream import ClientPool, describe_exception

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    def __init__(self) -> None:
        self.connections = 0
        self.port = 0


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Server]:
    info = Server()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        info.connections += 1
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    info.port = server.sockets[0].getsockname()[1]
    try:
        yield info
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (content-length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    if b"content-length:" in lower:
        size = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        return head, await reader.readexactly(size)
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            return head, body
        body += data[:-2]


def answer(body: bytes, *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), b"".join(h + b"\r\n" for h in extra),
                                                                   body)


async def answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request on the connection with its own body."""
    while True:
        _, body = await read_request(reader)
        writer.write(answer(b"got " + body))
        await writer.drain()


async def polled(condition: Callable[[], object], what: str) -> None:
    """Waits until `condition` holds (generous deadline: machines get busy)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        if condition():
            return
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def client() -> tuple[httpx.AsyncClient, Http1Transport]:
    transport = Http1Transport()
    return httpx.AsyncClient(transport=transport, timeout=10), transport


def run(scenario: Callable[[], Awaitable[object]]) -> object:
    return asyncio.run(asyncio.wait_for(scenario(), 30))


def test_plain_http_providers_get_this_transport_and_https_ones_httpcore() -> None:
    async def scenario() -> tuple[object, object]:
        pool = ClientPool()
        c = pool.get(None)
        plain, secure = c._transport_for_url(httpx.URL("http://x/")), c._transport_for_url(httpx.URL("https://x/"))
        proxied = pool.get("http://127.0.0.1:9")._transport_for_url(httpx.URL("http://x/"))
        await pool.aclose()
        return (type(plain), type(secure)), type(proxied)

    (plain, secure), proxied = run(scenario)  # type: ignore[misc]
    assert plain is Http1Transport
    assert secure is not Http1Transport and proxied is not Http1Transport


def test_a_connection_is_kept_and_used_again() -> None:
    async def scenario() -> tuple[list[str], int, str]:
        async with serving(answering) as server:
            c, _ = client()
            texts = []
            for i in range(3):
                response = await c.post(f"http://127.0.0.1:{server.port}/v1/messages", content=b"n%d" % i)
                texts.append(response.text)
            peer = response.extensions["network_stream"].get_extra_info("server_addr")
            await c.aclose()
            return texts, server.connections, peer[0]

    texts, connections, peer = run(scenario)  # type: ignore[misc]
    assert texts == ["got n0", "got n1", "got n2"]
    assert connections == 1 and peer == "127.0.0.1"


def test_a_chunked_answer_arrives_piece_by_piece() -> None:
    """The first piece reaches the reader before the server writes the second (it waits for the reader to say
    it has it): a stream is relayed as it comes."""

    async def scenario() -> list[bytes]:
        got_first = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nfirst\r\n")
            await writer.drain()
            await got_first.wait()
            writer.write(b"6\r\nsecond\r\n0\r\nx-trailer: 1\r\n\r\n")
            await writer.drain()
            await read_request(reader)  # the connection was kept for a second request
            writer.write(answer(b"again"))
            await writer.drain()

        async with serving(handler) as server:
            c, _ = client()
            pieces = []
            url = f"http://127.0.0.1:{server.port}/"
            async with c.stream("POST", url, content=b"{}") as response:
                async for piece in response.aiter_raw():
                    pieces.append(piece)
                    got_first.set()
            pieces.append((await c.post(url, content=b"{}")).content)
            assert server.connections == 1
            await c.aclose()
            return pieces

    assert run(scenario) == [b"first", b"second", b"again"]


def test_connections_that_cannot_be_trusted_again_are_closed() -> None:
    """An answer left unread, `connection: close`, HTTP/1.0, a body that runs to the end of the connection, and
    bytes after the answer: each next request gets a new connection."""

    cases = [
        answer(b"0123456789" * 10_000),  # the client reads only the head
        answer(b"x", b"connection: close"),
        b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\n\r\nto the end",
        answer(b"x") + b"junk",
    ]

    async def scenario(raw: bytes, read_body: bool) -> tuple[int, bytes]:
        answered = []

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await read_request(reader)
                if answered:
                    writer.write(answer(b"second"))
                    await writer.drain()
                    continue
                answered.append(raw)
                writer.write(raw)
                await writer.drain()
                if b"to the end" in raw:
                    return  # closing ends the body

        async with serving(handler) as server:
            c, _ = client()
            url = f"http://127.0.0.1:{server.port}/"
            async with c.stream("POST", url, content=b"{}") as response:
                first = await response.aread() if read_body else b""
            assert (await c.post(url, content=b"{}")).content == b"second"
            await c.aclose()
            return server.connections, first

    results = [asyncio.run(asyncio.wait_for(scenario(raw, i > 0), 30)) for i, raw in enumerate(cases)]
    assert [connections for connections, _ in results] == [2, 2, 2, 2, 2]
    assert results[3][1] == b"to the end"


def test_a_connection_the_server_closed_while_idle_is_not_used() -> None:
    async def scenario() -> tuple[str, int]:
        closed = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if closed.is_set():
                await answering(reader, writer)
                return
            await read_request(reader)
            writer.write(answer(b"one"))
            await writer.drain()
            writer.close()
            closed.set()

        async with serving(handler) as server:
            c, transport = client()
            url = f"http://127.0.0.1:{server.port}/"
            await c.post(url, content=b"{}")
            await closed.wait()
            key = ("127.0.0.1", server.port)
            # The server's close has reached the socket once it reads as readable.
            await polled(lambda: transport._idle[key][0].stream.get_extra_info("is_readable"), "the close")
            text = (await c.post(url, content=b"two")).text
            await c.aclose()
            return text, server.connections

    assert run(scenario) == ("got two", 2)


def test_informational_answers_are_passed_over_and_empty_ones_have_no_body() -> None:
    async def scenario() -> list[tuple[int, bytes]]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: x\r\n\r\n" + answer(b"final"))
            await read_request(reader)
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await read_request(reader)
            writer.write(answer(b"after"))
            await writer.drain()

        async with serving(handler) as server:
            c, _ = client()
            url = f"http://127.0.0.1:{server.port}/"
            out = []
            for _ in range(3):
                response = await c.post(url, content=b"{}")
                out.append((response.status_code, response.content))
            assert server.connections == 1
            await c.aclose()
            return out

    assert run(scenario) == [(200, b"final"), (204, b""), (200, b"after")]


def test_a_streamed_request_body_goes_chunked() -> None:
    async def scenario() -> str:
        async def body() -> AsyncIterator[bytes]:
            yield b"par"
            yield b""
            yield b"ts"

        async with serving(answering) as server:
            c, _ = client()
            response = await c.post(f"http://127.0.0.1:{server.port}/", content=body())
            await c.aclose()
            return response.text

    assert run(scenario) == "got parts"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"SPDY/3 200 OK\r\n\r\n", "not an HTTP/1.1 status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP/1.1 status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed response header line"),
        (b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", "malformed response header line"),
        (b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * HEAD_LIMIT + b"\r\n\r\n", "response head over"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nxy", "invalid content-length"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "invalid content-length"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", "without sending complete message body"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-5\r\n", "invalid chunk size"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n", "a chunk longer than its size"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nab", "incomplete chunked read"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n" + b"t: 1\r\n" * 200 + b"\r\n",
         "too many trailer lines"),
        (b"HTTP/1.1 200", "without sending complete response head"),
        (b"", "Server disconnected without sending a response"),
    ],
)
def test_a_broken_answer_is_a_protocol_error_naming_what_broke(raw: bytes, reason: str) -> None:
    async def scenario() -> str:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(raw)
            await writer.drain()

        async with serving(handler) as server:
            c, _ = client()
            with pytest.raises(httpx.RemoteProtocolError) as caught:
                response = await c.post(f"http://127.0.0.1:{server.port}/", content=b"{}")
                response.raise_for_status()
            await c.aclose()
            return describe_exception(caught.value)

    described = run(scenario)
    assert isinstance(described, str) and described.startswith("connection closed: ") and reason in described


def test_transport_errors_name_the_reason() -> None:
    async def scenario() -> list[str]:
        c, _ = client()
        with socket.socket() as unused:  # bound, never listening: refused
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
            with pytest.raises(httpx.ConnectError) as refused:
                await c.post(f"http://127.0.0.1:{port}/", content=b"{}")
        with pytest.raises(httpx.ConnectError) as unresolvable:
            await c.post("http://" + "x" * 64 + ".invalid/", content=b"{}")

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await asyncio.Event().wait()

        async with serving(silent) as server:
            with pytest.raises(httpx.ReadTimeout) as timed_out:
                await c.post(f"http://127.0.0.1:{server.port}/", content=b"{}", timeout=httpx.Timeout(10, read=0.05))
        await c.aclose()
        return [describe_exception(e.value) for e in (refused, unresolvable, timed_out)]

    refused, unresolvable, timed_out = run(scenario)  # type: ignore[misc]
    assert refused == "connection refused"
    assert unresolvable.startswith("DNS error: invalid host name")
    assert timed_out == "timeout"


def test_a_header_with_a_line_break_is_never_written() -> None:
    async def scenario() -> int:
        async with serving(answering) as server:
            c, _ = client()
            with pytest.raises(httpx.LocalProtocolError):
                await c.post(f"http://127.0.0.1:{server.port}/", content=b"{}",
                             headers={"x-title": "a\r\nx-api-key: stolen"})
            await c.aclose()
            return server.connections

    assert run(scenario) == 0


def test_idle_connections_the_server_closed_are_swept_whatever_provider_is_asked(monkeypatch) -> None:
    """A provider's idle connection that its server closed is closed by the transport when a connection to another
    provider is put back, not left half-closed until the first provider is asked again."""
    monkeypatch.setattr(http1_transport, "SWEEP_EVERY", 0.0)

    async def scenario() -> tuple[bool, list[tuple[str, int]], int]:
        close_now = asyncio.Event()

        async def close_after_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(answer(b"a"))
            await writer.drain()
            await close_now.wait()

        async with serving(close_after_answer) as a, serving(answering) as b:
            c, transport = client()
            await c.post(f"http://127.0.0.1:{a.port}/", content=b"{}")
            idle_a = transport._idle[("127.0.0.1", a.port)][0]
            close_now.set()
            await polled(lambda: idle_a.stream.get_extra_info("is_readable"), "a's close")
            await c.post(f"http://127.0.0.1:{b.port}/", content=b"{}")
            swept = idle_a.writer.is_closing()
            keys = sorted(transport._idle)
            await c.aclose()
            return swept, keys, b.port

    swept, keys, b_port = run(scenario)  # type: ignore[misc]
    assert swept
    assert keys == [("127.0.0.1", b_port)]  # only b's connection is kept
