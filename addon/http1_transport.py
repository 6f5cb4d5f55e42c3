"""The balancer's own HTTP/1.1 client for providers at `http://` addresses (a LiteLLM proxy, vLLM or Ollama next door).

httpcore's HTTP/1.1 path runs every request and every piece of a stream through h11's event machine and its own
locks and traces: about 1,200 Python calls and half a millisecond of CPU for one small exchange on this machine, a
third of what the balancer costs per request. A provider at an `http://` address speaks plain HTTP/1.1, and what
the balancer needs of it is small: send a request whose body is known, read a head, read a body framed by
content-length, chunks or the end of the connection, and keep the connection for the next request when the
exchange ended cleanly. This transport does that on asyncio's streams; `https://` providers (HTTP/2, TLS) and
outgoing proxies stay on httpcore.

It behaves as httpx's own transport does where the balancer can tell: the same httpx exceptions (each caused by
the operating system's error, which names the reason), the same timeouts (`request.extensions["timeout"]`), a
connection closed when its response is left unread, and idle connections checked before they are used again.
What a provider sends is bounded: a head of at most 64 KiB, a chunk-size line of the same, 100 trailer lines, 16
informational answers; and parsed as strictly as h11 does (the head is passed on to the client).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from .network_backend import AsyncioStream

HEAD_LIMIT = 64 * 1024
_READ = 64 * 1024
_MAX_TRAILERS = 100
SWEEP_EVERY = 5.0  # seconds between looks at every idle connection, made when a connection is put back
_MAX_INFORMATIONAL = 16  # 1xx answers before the final one: each comes in time, so no read timeout would end a flood
_MAX_CHUNK = 1 << 40  # a chunk size beyond this is not a body, it is an attack on the counter
_NO_BODY_STATUSES = frozenset({204, 304})
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
_FORBIDDEN_IN_HEADERS = (b"\r", b"\n", b"\0")
# RFC 9110 5.6.2: a header name is a token; a value or reason phrase holds no control character but tab (a bare CR
# or LF in it would end the line for the client the answer is passed on to).
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]+")  # int(x, 16) would also take "0x5", "1_0" and " 5"


class _Reader(asyncio.StreamReader):
    """asyncio's reader, except that a reset which comes while the server's bytes are still unread ends the stream
    like a close: a server that refuses a large request answers at once and closes with the body unread, and
    asyncio would hide that answer behind the reset. The framing still tells a cut answer from a whole one; for a
    body that runs to the connection's end, `reset_after_data` tells."""

    reset_after_data = False

    def set_exception(self, exc: Exception) -> None:
        if isinstance(exc, (ConnectionResetError, BrokenPipeError)) and _unread(self) and not self.at_eof():
            self.reset_after_data = True
            self.feed_eof()
            return
        super().set_exception(exc)


async def _open(host: str, port: int) -> tuple[_Reader, asyncio.StreamWriter]:
    """asyncio.open_connection with the reader above."""
    loop = asyncio.get_running_loop()
    reader = _Reader(limit=HEAD_LIMIT, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, host, port)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


class _Connection:
    """One kept connection to a provider."""

    def __init__(self, reader: _Reader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.stream = AsyncioStream(reader, writer)  # what httpx's `network_stream` extension shows
        self.idle_since = 0.0

    def usable(self, now: float, expiry: float) -> bool:
        """Fit for the next request: not idle too long, not closed by the server (nor holding data it should not)."""
        if now - self.idle_since > expiry:
            return False
        return self.untouched() and not self.stream.get_extra_info("is_readable")

    def untouched(self) -> bool:
        """Nothing came from the server, and nothing ended the connection, since the last exchange on it."""
        # asyncio reads as soon as bytes arrive: what the server sent sits in the reader, not in the socket, and
        # would be read as the next request's answer.
        reader = self.reader
        return not (self.writer.is_closing() or _unread(reader) or reader.at_eof() or reader.exception() is not None)

    def close(self) -> None:
        self.writer.close()

    def give_up(self) -> None:
        """Ended after an exchange that failed or was called off: reset when part of the request is still buffered
        (to a provider that stopped reading, it would stay held; to one that reads again, it would arrive whole after
        the balancer moved on), else closed as usual."""
        if self.writer.transport.get_write_buffer_size():
            self.reset()
        else:
            self.close()

    def reset(self) -> None:
        """Ended with a reset, at once: what is still buffered, here and in the kernel, is dropped. For a
        connection holding part of a request that must never be completed, to a provider that may have stopped
        reading; the provider is told plainly that nothing more comes."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        self.writer.transport.abort()


def _error(kind: type[httpx.TransportError], message: str, request: httpx.Request) -> httpx.TransportError:
    return kind(message, request=request)


class Http1Transport(httpx.AsyncBaseTransport):
    """httpx's transport for plain `http://` providers: HTTP/1.1 on kept asyncio connections."""

    def __init__(self, max_idle: int = 200, keepalive_expiry: float = 60.0):
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._closed = False
        self._swept = time.monotonic()

    # -- connections -------------------------------------------------------------------------------------------
    def _idle_connection(self, key: tuple[str, int]) -> _Connection | None:
        """A kept connection to `key` fit for the next request, taken from the idle ones (the unfit are closed)."""
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.usable(now, self.keepalive_expiry):
                return connection
            connection.close()
        return None

    async def _connection(self, host: str, port: int, request: httpx.Request, timeout: float | None) -> _Connection:
        connection = self._idle_connection((host, port))
        if connection is not None:
            return connection
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await _open(host, port)
        except TimeoutError as exc:
            raise _error(httpx.ConnectTimeout, "connect timeout", request) from exc
        except OSError as exc:
            raise _error(httpx.ConnectError, str(exc) or type(exc).__name__, request) from exc
        except UnicodeError as exc:  # a name the resolver cannot even be asked about (a label over 63 characters)
            unresolvable = socket.gaierror(socket.EAI_NONAME, f"invalid host name: {exc}")
            raise _error(httpx.ConnectError, str(unresolvable), request) from unresolvable
        return _Connection(reader, writer)

    def _release(self, key: tuple[str, int], connection: _Connection) -> None:
        if self._closed or self._idle_count >= self.max_idle or connection.writer.is_closing():
            connection.close()
            return
        now = connection.idle_since = time.monotonic()
        self._idle.setdefault(key, []).append(connection)
        self._idle_count += 1
        if now - self._swept >= SWEEP_EVERY:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        """Idle connections the server closed (or that idled too long) are closed now, whichever provider they
        are for: not left half-closed until that provider is asked again."""
        self._swept = now
        for key, connections in list(self._idle.items()):
            kept = [c for c in connections if c.usable(now, self.keepalive_expiry)]
            for connection in connections:
                if connection not in kept:
                    connection.close()
            self._idle_count -= len(connections) - len(kept)
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]

    async def aclose(self) -> None:
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        self._idle_count = 0

    # -- one exchange ------------------------------------------------------------------------------------------
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        url = request.url
        host = url.host
        port = url.port or 80
        head = _request_head(request)
        ahead = request.extensions.get(EARLY)
        connection = ahead.claim(self, head, request) if isinstance(ahead, EarlyRequest) else None
        written = connection is not None
        if connection is None:
            connection = await self._connection(host, port, request, timeouts.get("connect"))
        early = False
        try:
            if isinstance(request.stream, httpx.ByteStream) and len(request.content) > _READ:
                (status, reason, version, headers), early = await _send_racing_answer(
                    connection, request, head, timeouts.get("write"), timeouts.get("read"), written)
            else:
                await _send_request(connection, request, head, timeouts.get("write"), written)
                status, reason, version, headers = await _read_response_head(
                    connection, request, timeouts.get("read"))
        except BaseException:
            connection.give_up()
            raise
        body = _ResponseBody(self, (host, port), connection, request, status, version, headers,
                             timeouts.get("read"), early)
        return httpx.Response(
            status, headers=headers, stream=body,
            extensions={"http_version": version, "reason_phrase": reason, "network_stream": connection.stream},
        )

    # -- a request written before it is sent -----------------------------------------------------------------
    def write_early(self, request: httpx.Request) -> EarlyRequest | None:
        """`request` written on an idle connection to its provider but for its last byte, which only
        `handle_async_request` writes, and only for the very same request (`EarlyRequest`). None when there is no
        idle connection to take (no connection is opened for a request that may not be sent) or nothing to hold
        back."""
        if self._closed or not isinstance(request.stream, httpx.ByteStream) or not request.content:
            return None
        url = request.url
        try:
            head = _request_head(request)
        except httpx.LocalProtocolError:
            return None
        connection = self._idle_connection((url.host, url.port or 80))
        if connection is None:
            return None
        content = request.content
        connection.writer.write(head)
        connection.writer.write(memoryview(content)[:-1])
        return EarlyRequest(self, connection, head, content)


EARLY = "balancer.early_request"  # the request extension that hands an EarlyRequest to the transport


class EarlyRequest:
    """A request on its way before the balancer has decided to send it: its head and all of its body but the last
    byte are written to a connection of its own. The provider reads them meanwhile, but cannot act on them: the
    body is one byte short of its content-length (and of its closing brace). The request sent later with
    `request.extensions[EARLY]` set to this takes the connection and writes that byte -- if it is exactly the
    request written (method, target, headers, body); any other request, or a connection the provider wrote to
    or closed meanwhile, resets the connection and is sent on its own, as if nothing had been written. So does
    `abandon()` for one never claimed. A reset, not a close: nothing still buffered is written after all.
    `outcome` says which it was: TAKEN, DECLINED or UNUSED."""

    def __init__(self, transport: Http1Transport, connection: _Connection, head: bytes, content: bytes):
        self._transport = transport
        self._connection: _Connection | None = connection
        self._head = head
        self._content = content
        self.outcome: str | None = None  # None while pending

    def claim(self, transport: Http1Transport, head: bytes, request: httpx.Request) -> _Connection | None:
        """The connection, with all of `request` but its last byte written, when `request` is the one written."""
        connection, self._connection = self._connection, None
        if connection is None:
            return None
        written, self._head, self._content = (self._head, self._content), b"", b""
        if (transport is self._transport and written == (head, request.content)
                and isinstance(request.stream, httpx.ByteStream) and connection.untouched()):
            self.outcome = TAKEN
            return connection
        self.outcome = DECLINED
        connection.reset()
        return None

    def abandon(self) -> None:
        connection, self._connection = self._connection, None
        self._head, self._content = b"", b""
        if connection is not None:
            self.outcome = UNUSED
            connection.reset()


# What became of an EarlyRequest: its request was sent (its last byte completed it); another request (or the same
# on a connection the provider had written to or closed) was sent instead, on another connection; none was sent.
TAKEN, DECLINED, UNUSED = "taken", "declined", "unused"


def _request_head(request: httpx.Request) -> bytes:
    """The request line and headers (httpx has put Host and the body's framing among them)."""
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)]
    for name, value in request.headers.raw:
        if any(c in name or c in value for c in _FORBIDDEN_IN_HEADERS) or b":" in name:
            raise httpx.LocalProtocolError(f"header {name[:40]!r} holds a line break or NUL", request=request)
        lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    return b"".join(lines)


async def _send_request(connection: _Connection, request: httpx.Request, head: bytes,
                        timeout: float | None, written: bool = False) -> None:
    """`written`: all of the request but its last byte is on the connection already (EarlyRequest)."""
    writer = connection.writer
    try:
        async with asyncio.timeout(timeout):
            if written:
                writer.write(request.content[-1:])
            elif isinstance(request.stream, httpx.ByteStream):  # the body is known: one write when it is small
                body = request.content
                if len(body) <= _READ:
                    writer.write(head + body)
                else:
                    writer.write(head)
                    writer.write(body)
            else:
                writer.write(head)
                chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
                async for chunk in request.stream:  # type: ignore[union-attr]
                    if chunk:
                        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                        await writer.drain()
                if chunked:
                    writer.write(b"0\r\n\r\n")
            await writer.drain()
    except TimeoutError as exc:
        raise _error(httpx.WriteTimeout, "write timeout", request) from exc
    except (OSError, RuntimeError) as exc:  # RuntimeError: the transport is closed already
        raise _error(httpx.WriteError, str(exc) or type(exc).__name__, request) from exc


async def _send_racing_answer(
    connection: _Connection, request: httpx.Request, head: bytes, write_timeout: float | None,
    read_timeout: float | None, written: bool = False,
) -> tuple[tuple[int, bytes, bytes, list[tuple[bytes, bytes]]], bool]:
    """A large request written while its answer is already awaited: a server may refuse it after its head (413)
    and stop reading, or close. Its answer is the answer then, not a write error or a write timeout (which would
    count against the provider). The head, and whether it came before the request was all written."""
    sending = asyncio.ensure_future(_send_request(connection, request, head, write_timeout, written))
    answering = asyncio.ensure_future(_read_response_head(connection, request, read_timeout))
    try:
        await asyncio.wait((sending, answering), return_when=asyncio.FIRST_COMPLETED)
        if not sending.done():
            return answering.result(), True
        failure = sending.exception()
        if failure is None:
            return await answering, False
        if isinstance(failure, httpx.WriteTimeout):  # nothing came back either
            raise failure
        try:
            return await answering, True  # the answer sent before the server closed, if there was one
        except httpx.HTTPError:
            raise failure from None
    finally:
        for task in (sending, answering):
            task.cancel()
            task.add_done_callback(_retrieved)


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _read_response_head(
    connection: _Connection, request: httpx.Request, timeout: float | None
) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    """Status, reason, version and headers of the final response (informational 1xx ones are passed over)."""
    for _ in range(_MAX_INFORMATIONAL + 1):
        raw = await _read_until(connection, b"\r\n\r\n", request, timeout, "response head")
        status, reason, version, headers = _parse_head(raw, request)
        if status == 101 and "upgrade" not in request.headers:
            # RFC 9110 15.2.2: no switch the request did not ask for (the balancer never asks); the relay has
            # nothing to pass on from a connection speaking another protocol.
            raise httpx.RemoteProtocolError("101 switching protocols without an upgrade asked for", request=request)
        if not 100 <= status < 200 or status == 101:
            return status, reason, version, headers
    raise httpx.RemoteProtocolError(f"more than {_MAX_INFORMATIONAL} informational answers", request=request)


async def _read_until(connection: _Connection, separator: bytes, request: httpx.Request, timeout: float | None,
                      what: str) -> bytes:
    try:
        async with asyncio.timeout(timeout):
            return await connection.reader.readuntil(separator)
    except TimeoutError as exc:
        raise _error(httpx.ReadTimeout, "read timeout", request) from exc
    except asyncio.LimitOverrunError as exc:
        raise _error(httpx.RemoteProtocolError, f"{what} over {HEAD_LIMIT} bytes", request) from exc
    except asyncio.IncompleteReadError as exc:
        message = ("Server disconnected without sending a response." if what == "response head" and not exc.partial
                   else f"peer closed connection without sending complete {what}")
        raise _error(httpx.RemoteProtocolError, message, request) from exc
    except OSError as exc:
        raise _error(httpx.ReadError, str(exc) or type(exc).__name__, request) from exc


def _parse_head(raw: bytes, request: httpx.Request) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    # The messages never quote the provider's bytes: a provider may echo the request's credential in them, and
    # these messages become the attempt's reason in logs and flows.
    lines = raw[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if (version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit() or code[:1] == b"0"
            or _CONTROL.search(reason)):
        raise httpx.RemoteProtocolError("not an HTTP/1.1 status line", request=request)
    headers: list[tuple[bytes, bytes]] = []
    for number, line in enumerate(lines[1:], 1):
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name) or _CONTROL.search(value):
            raise httpx.RemoteProtocolError(f"malformed response header line (header {number})", request=request)
        headers.append((name, value.strip(b" \t")))
    return int(code), reason, version, headers


class _ResponseBody(httpx.AsyncByteStream):
    """A response's body as it arrives, framed as its head says; the connection goes back to the transport when
    the body was read to its end and both sides allow it, and is closed otherwise."""

    def __init__(self, transport: Http1Transport, key: tuple[str, int], connection: _Connection,
                 request: httpx.Request, status: int, version: bytes, headers: list[tuple[bytes, bytes]],
                 timeout: float | None, early: bool = False):
        self._transport = transport
        self._key = key
        self._connection: _Connection | None = connection
        self._request = request
        self._timeout = timeout
        self._done = False
        self._length: int | None = None
        self._chunked = False
        keep = version == b"HTTP/1.1" and not early  # an early answer: part of the request is still unsent
        lengths: set[bytes] = set()
        codings: list[bytes] = []
        for name, value in headers:
            lname = name.lower()
            if lname == b"content-length":
                lengths.update(v.strip() for v in value.split(b","))
            elif lname == b"transfer-encoding":
                codings.extend(c.strip().lower() for c in value.split(b",") if c.strip())
            elif lname == b"connection" and b"close" in value.lower():
                keep = False
        if request.headers.get("connection", "").lower() == "close":
            keep = False
        if request.method == "HEAD" or status in _NO_BODY_STATUSES or 100 <= status < 200:
            self._length = 0
        elif codings:
            # Only chunked: the answer was asked for uncompressed, and a body in any other coding would be passed
            # on as it came, undecoded, with nothing to tell the client.
            if codings != [b"chunked"]:
                connection.close()
                raise httpx.RemoteProtocolError("unsupported transfer-encoding in the response", request=request)
            self._chunked = True
            keep = keep and not lengths  # both framings at once: never trusted again
        elif lengths:
            if len(lengths) != 1 or not next(iter(lengths)).isdigit():
                connection.close()
                raise httpx.RemoteProtocolError("invalid content-length in the response", request=request)
            self._length = int(next(iter(lengths)))
        else:
            keep = False  # the body runs to the end of the connection
        if status == 101:
            keep = False
        self._keep = keep

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            return
        try:
            if self._chunked:
                async for piece in self._chunks(connection):
                    yield piece
            elif self._length is not None:
                remaining = self._length
                while remaining:
                    piece = await self._read(connection, min(remaining, _READ))
                    if not piece:
                        raise httpx.RemoteProtocolError(
                            "peer closed connection without sending complete message body: "
                            f"received {self._length - remaining} bytes, expected {self._length}",
                            request=self._request,
                        )
                    remaining -= len(piece)
                    yield piece
            else:
                while piece := await self._read(connection, _READ):
                    yield piece
                if connection.reader.reset_after_data:  # the end was a reset: the body may be cut anywhere
                    reset = ConnectionResetError("connection reset")
                    raise httpx.ReadError("connection reset", request=self._request) from reset
        except BaseException:
            self._close()
            raise
        self._done = True
        await self.aclose()

    async def _chunks(self, connection: _Connection) -> AsyncIterator[bytes]:
        while True:
            line = await _read_until(connection, b"\r\n", self._request, self._timeout, "chunk size line")
            size_text = line[:-2].split(b";", 1)[0].rstrip(b" \t")  # white space may come before an extension
            if not _CHUNK_SIZE.fullmatch(size_text) or int(size_text, 16) > _MAX_CHUNK:
                raise httpx.RemoteProtocolError("invalid chunk size", request=self._request)
            size = int(size_text, 16)
            if size == 0:
                for _ in range(_MAX_TRAILERS):
                    if await _read_until(connection, b"\r\n", self._request, self._timeout, "trailers") == b"\r\n":
                        return
                raise httpx.RemoteProtocolError("too many trailer lines", request=self._request)
            while size:
                piece = await self._read(connection, min(size, _READ))
                if not piece:
                    raise httpx.RemoteProtocolError(
                        "peer closed connection without sending complete message body: incomplete chunked read",
                        request=self._request,
                    )
                size -= len(piece)
                yield piece
            end = await _read_until(connection, b"\r\n", self._request, self._timeout, "chunk")
            if end != b"\r\n":
                raise httpx.RemoteProtocolError("a chunk longer than its size", request=self._request)

    async def _read(self, connection: _Connection, size: int) -> bytes:
        try:
            async with asyncio.timeout(self._timeout):
                return await connection.reader.read(size)
        except TimeoutError as exc:
            raise _error(httpx.ReadTimeout, "read timeout", self._request) from exc
        except OSError as exc:
            raise _error(httpx.ReadError, str(exc) or type(exc).__name__, self._request) from exc

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._done and self._keep and not _unread(connection.reader):
            self._transport._release(self._key, connection)
        else:
            connection.close()


def _unread(reader: asyncio.StreamReader) -> int:
    """Bytes the server sent after the response: such a connection is not used again (they would be read as the
    next response's start). asyncio has no public way to ask."""
    return len(getattr(reader, "_buffer", b""))
