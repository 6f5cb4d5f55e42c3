"""The balancer's HTTP/1.1 client (addon/http1_transport.py) against a broken or hostile provider: framing it must
refuse, connections it must never use again, and error messages that carry nothing the provider chose to send."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from addon.upstream import describe_exception
from fakes import Behavior, FakeProvider, Message
from helpers import anthropic_message, anthropic_provider, wait_until
from test_http1_transport import answer, answering, client, polled, read_request, run, serving

KEY = "sk-ant-api03-ECHOEDSECRETKEY0123456789abcdef"


async def first_answer_then(raw: bytes, second: bytes = b"") -> tuple[BaseException | None, bytes, int]:
    """A request whose answer is `raw`; the error it raised (or None and the body), and the number of connections
    the server saw after a second request answered `second` (when given)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw)
        await writer.drain()
        if second:
            await answering(reader, writer)

    async with serving(handler) as server:
        c, _ = client()
        error: BaseException | None = None
        body = b""
        try:
            response = await c.post(f"http://127.0.0.1:{server.port}/", content=b"{}", headers={"x-api-key": KEY})
            body = response.content
        except httpx.HTTPError as exc:
            error = exc
        await c.aclose()
        return error, body, server.connections


# -- bytes that arrive after an answer ---------------------------------------------------------------------------
def test_bytes_arriving_after_a_kept_connection_was_released_are_never_read_as_the_next_answer() -> None:
    """A provider sends more than its content-length said, a moment after the answer: the connection is idle by
    then, and the next request on it would read the provider's extra bytes as its own answer."""

    async def scenario() -> tuple[bytes, int]:
        released = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if released.is_set():
                await answering(reader, writer)
                return
            await read_request(reader)
            writer.write(answer(b"one"))
            await writer.drain()
            await released.wait()
            writer.write(answer(b"FORGED"))
            await writer.drain()
            await answering(reader, writer)

        async with serving(handler) as server:
            c, transport = client()
            url = f"http://127.0.0.1:{server.port}/"
            await c.post(url, content=b"{}")
            key = ("127.0.0.1", server.port)
            idle = transport._idle[key][0]
            released.set()
            await polled(lambda: idle.reader._buffer, "the forged answer in the idle connection's reader")
            text = (await c.post(url, content=b"two")).content
            await c.aclose()
            return text, server.connections

    assert run(scenario) == (b"got two", 2)


# -- framing that is refused -------------------------------------------------------------------------------------
CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        (CHUNKED + b"1_0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n", "invalid chunk size"),
        (CHUNKED + b"5 5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
         "unsupported transfer-encoding"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\nhello", "unsupported transfer-encoding"),
        (b"HTTP/1.1 200 OK\r\nx-evil: a\nx-injected: 1\r\ncontent-length: 0\r\n\r\n", "malformed response header"),
        (b"HTTP/1.1 200 OK\r\nx-evil: a\rb\r\ncontent-length: 0\r\n\r\n", "malformed response header"),
        (b"HTTP/1.1 200 OK\r\nx-evil: a\0b\r\ncontent-length: 0\r\n\r\n", "malformed response header"),
        (b"HTTP/1.1 200 OK\r\nx(evil): a\r\ncontent-length: 0\r\n\r\n", "malformed response header"),
        (b"HTTP/1.1 200 OK\r\nx\0evil: a\r\ncontent-length: 0\r\n\r\n", "malformed response header"),
        (b"HTTP/1.1 200 OK\r\nx\xe9: a\r\ncontent-length: 0\r\n\r\n", "malformed response header"),
        (b"HTTP/1.1 200 O\nK\r\ncontent-length: 0\r\n\r\n", "not an HTTP/1.1 status line"),
        (b"HTTP/1.1 099 Odd\r\ncontent-length: 0\r\n\r\n", "not an HTTP/1.1 status line"),
        (b"HTTP/1.1 000\r\ncontent-length: 0\r\n\r\n", "not an HTTP/1.1 status line"),
        (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n{}",
         "101 switching protocols without an upgrade asked for"),
    ],
)
def test_framing_a_strict_parser_refuses_is_refused(raw: bytes, reason: str) -> None:
    error, body, _ = run(lambda: first_answer_then(raw))  # type: ignore[misc]
    assert isinstance(error, httpx.RemoteProtocolError), (error, body)
    assert reason in describe_exception(error)


@pytest.mark.parametrize(
    ("raw", "body"),
    [
        (CHUNKED + b"0005\r\nhello\r\n000\r\n\r\n", b"hello"),  # leading zeros
        (CHUNKED + b"5 ;ext=\"q\"\r\nhello\r\n0\r\n\r\n", b"hello"),  # white space before an extension
        (b"HTTP/1.1 200\r\ncontent-length: 2\r\n\r\nok", b"ok"),  # no reason phrase
        (b"HTTP/1.1 200 \r\ncontent-length: 2\r\n\r\nok", b"ok"),
        (b"HTTP/1.1 200 OK\r\nx-latin: caf\xe9\r\ncontent-length: 2\r\n\r\nok", b"ok"),  # obs-text in a value
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", b"ok"),
    ],
)
def test_framing_a_strict_parser_accepts_is_accepted(raw: bytes, body: bytes) -> None:
    error, got, _ = run(lambda: first_answer_then(raw))  # type: ignore[misc]
    assert error is None and got == body


def test_a_flood_of_informational_answers_ends_in_an_error() -> None:
    """Each `100 Continue` comes in time, so no read timeout ever fires: without a bound the request would wait
    until the balancer's own deadline, with the provider's bytes read in a loop."""

    async def scenario() -> str:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            while True:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" * 100)
                await writer.drain()
                await asyncio.sleep(0)

        async with serving(handler) as server:
            c, _ = client()
            with pytest.raises(httpx.RemoteProtocolError) as caught:
                await c.post(f"http://127.0.0.1:{server.port}/", content=b"{}")
            await c.aclose()
            return describe_exception(caught.value)

    assert "informational" in run(scenario)  # type: ignore[operator]


# -- what an error message may hold ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "echo",
    [
        b"HTTP/1.1 %s\r\n\r\n",
        b"%s 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n%s\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx-api-key : %s\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: %s\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n%s\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: %s\r\n\r\n",
    ],
)
def test_a_provider_echoing_the_key_in_a_broken_answer_does_not_put_it_in_the_error(echo: bytes) -> None:
    error, _, _ = run(lambda: first_answer_then(echo % KEY.encode()))  # type: ignore[misc]
    assert isinstance(error, httpx.RemoteProtocolError)
    for text in (str(error), describe_exception(error), repr(error)):
        assert not any(KEY[i : i + 8] in text for i in range(len(KEY) - 7)), text


# -- an answer that comes before the request was written ---------------------------------------------------------
def test_an_early_answer_to_a_large_request_is_the_answer() -> None:
    """A provider refuses a 10 MB request after its head (413) and closes without reading the body: the balancer
    gets the 413 (the client's mistake, passed on), not a write error (which would cool the provider down)."""

    async def scenario() -> tuple[int, bytes]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\nconnection: close\r\n\r\ntoo large")
            await writer.drain()

        async with serving(handler) as server:
            c, _ = client()
            response = await c.post(f"http://127.0.0.1:{server.port}/", content=b"x" * 10_000_000)
            await c.aclose()
            return response.status_code, response.content

    assert run(scenario) == (413, b"too large")


def test_an_early_answer_from_a_server_that_stops_reading_is_the_answer_and_its_connection_is_not_kept() -> None:
    """The server answers after the head and neither reads nor closes: writing the rest would wait for the write
    timeout; and the connection, with part of the request unsent, is never used again."""

    async def scenario() -> tuple[int, bytes, bytes, int]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if info.connections > 1:
                await answering(reader, writer)
                return
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\r\ntoo large")
            await writer.drain()
            await asyncio.Event().wait()

        async with serving(handler) as info:
            c, _ = client()
            url = f"http://127.0.0.1:{info.port}/"
            response = await c.post(url, content=b"x" * 64_000_000, timeout=httpx.Timeout(600))
            second = await c.post(url, content=b"small")
            await c.aclose()
            return response.status_code, response.content, second.content, info.connections

    assert run(scenario) == (413, b"too large", b"got small", 2)


def test_a_body_to_the_connections_end_cut_by_a_reset_is_an_error_not_an_end() -> None:
    """A reset that comes while the server's bytes are unread ends the reader like a close (so that an early answer
    is read); a body framed by the connection's end must still not pass for whole then."""

    async def scenario() -> str:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + b"cut here" * 1000)
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # a reset (RST), not a close

        async with serving(handler) as server:
            c, _ = client()
            with pytest.raises(httpx.ReadError) as caught:
                async with c.stream("POST", f"http://127.0.0.1:{server.port}/", content=b"{}") as response:
                    reader = response.extensions["network_stream"]._reader
                    # The reset has reached the reader, the body still unread.
                    await polled(lambda: reader.reset_after_data or reader.exception() is not None, "the reset")
                    async for _ in response.aiter_raw():
                        pass
            await c.aclose()
            return describe_exception(caught.value)

    assert run(scenario) == "connection reset"


# -- through the running balancer --------------------------------------------------------------------------------
MESSAGES = [{"role": "user", "content": "Hi"}]
BODY = {"model": "claude-sonnet-4", "max_tokens": 8, "messages": MESSAGES}
MESSAGE = json.dumps(anthropic_message("claude-sonnet-4", "from a")).encode()


@dataclass
class Bytes(Behavior):
    """An answer written byte for byte (`{key}`: the request's x-api-key); then, when `later` is given, those
    bytes once `go` is set, on the same connection."""

    raw: bytes
    later: bytes = b""
    go: threading.Event = field(default_factory=threading.Event)
    written: threading.Event = field(default_factory=threading.Event)

    def run(self, handler, request, fake):
        handler.wfile.write(self.raw.replace(b"{key}", request.headers.get("x-api-key", "").encode()))
        handler.wfile.flush()
        if self.later:
            self.go.wait(30)
            handler.wfile.write(self.later)
            handler.wfile.flush()
            self.written.set()
        else:
            handler.close_connection = True


def json_answer(body: bytes, *headers: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n%scontent-length: %d\r\n\r\n%s"
            % (b"".join(h + b"\r\n" for h in headers), len(body), body))


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (json_answer(MESSAGE, b"x-evil: a\nx-injected: 1"), "malformed response header"),
        (json_answer(MESSAGE, b"x-evil: a\0b"), "malformed response header"),
        (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n" + MESSAGE,
         "101 switching protocols"),
        (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: gzip, chunked\r\n\r\n"
         + b"%x\r\n%s\r\n0\r\n\r\n" % (len(MESSAGE), MESSAGE), "unsupported transfer-encoding"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" * 40 + json_answer(MESSAGE), "informational"),
    ],
    ids=["bare-lf-in-header", "nul-in-header", "unasked-101", "gzip-chunked", "1xx-flood"],
)
def test_a_broken_answer_fails_over_and_names_what_broke(balancer, client, unique, raw, words):
    with FakeProvider(Bytes(raw)) as bad, FakeProvider(Message("from b")) as good:
        a, b = f"a-{unique}", f"b-{unique}"
        balancer.use([anthropic_provider(a, bad.url), anthropic_provider(b, good.url)])
        answer_ = client.messages.with_raw_response.create(**BODY)
        assert answer_.headers["x-balancer-provider"] == b
        assert "x-injected" not in answer_.headers
        assert answer_.parse().content[0].text == "from b"
        assert words in balancer.provider_status(a)["last_error"]


def test_a_passthrough_key_echoed_in_a_broken_head_is_in_no_reason(balancer, unique):
    """With passthrough the client's own key goes to the provider, and the balancer's redactor knows only the
    providers' keys: a provider echoing it in a head it cannot parse must not see it land in a reason."""
    secret = "sk-ant-client-OWNKEY-0123456789abcdef"
    with FakeProvider(Bytes(b"HTTP/1.1 200 OK\r\nx-api-key : {key}\r\n\r\n")) as bad, \
            FakeProvider(Message("from b")) as good:
        a, b = f"a-{unique}", f"b-{unique}"
        balancer.use([anthropic_provider(a, bad.url, auth_type="passthrough"),
                      anthropic_provider(b, good.url, auth_type="passthrough")])
        response = httpx.post(balancer.url + "/v1/messages", json=BODY, headers={"x-api-key": secret}, timeout=30)
        assert response.headers["x-balancer-provider"] == b
        status = balancer.provider_status(a)
        assert "malformed response header" in status["last_error"]
        wait_until(lambda: any(f"{a} " in line for line in balancer.log_lines), what="the request's log line")
        pieces = [secret[i : i + 8] for i in range(len(secret) - 7)]
        assert not any(piece in json.dumps(status) or piece in balancer.log for piece in pieces)


def test_bytes_a_provider_sends_after_its_answer_are_never_the_next_clients_answer(balancer, client, unique):
    """The provider answers, then, once the client has its answer, writes a forged one on the same connection:
    the balancer's next request must not take it for its answer."""
    forged = json.dumps(anthropic_message("claude-sonnet-4", "FORGED")).encode()
    first = Bytes(json_answer(MESSAGE), later=json_answer(forged))
    with FakeProvider(Message("the real second")).then(first) as fake:
        balancer.use([anthropic_provider(f"a-{unique}", fake.url)])
        assert client.messages.create(**BODY).content[0].text == "from a"
        first.go.set()
        # Sent on loopback: in the balancer's socket before the next request reaches the balancer.
        assert first.written.wait(30)
        assert client.messages.create(**BODY).content[0].text == "the real second"


@contextmanager
def refusing_large_requests() -> Iterator[str]:
    """A provider that answers 413 after a request's head and closes without reading its body (a reset follows)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stopping = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(30)
                head = b""
                while b"\r\n\r\n" not in head:
                    data = conn.recv(65536)
                    if not data:
                        break
                    head += data
                body = json.dumps({"type": "error", "error": {"type": "request_too_large",
                                                              "message": "Request exceeds the maximum size"}}).encode()
                conn.sendall(b"HTTP/1.1 413 Request Entity Too Large\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        thread.join(10)
        listener.close()


def test_a_provider_refusing_a_large_request_at_once_is_not_counted_a_failure(balancer, unique):
    """The provider's 413 reaches the client; neither provider is cooled down for what was the request's size."""
    big = {**BODY, "messages": [{"role": "user", "content": "x" * 10_000_000}]}
    with refusing_large_requests() as first, refusing_large_requests() as second:
        a, b = f"a-{unique}", f"b-{unique}"
        balancer.use([anthropic_provider(a, first), anthropic_provider(b, second)])
        response = httpx.post(balancer.url + "/v1/messages", json=big, timeout=60)
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "request_too_large"
        assert balancer.provider_status(a)["failures"] == 0 and balancer.provider_status(b)["failures"] == 0
