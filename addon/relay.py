"""A loopback HTTP/1.1 server that hands a provider's already-open response to mitmproxy, chunk by chunk.

mitmproxy cannot retry a flow or give it a new upstream after the fact, so the addon makes the provider
attempts itself. Once a provider has answered acceptably, its response is *parked* here under a random
single-use token and the flow is pointed at `http://127.0.0.1:<port>/relay/<token>`; mitmproxy then
streams that to the client like any upstream answer. A parked response nobody claims is closed after a TTL.
`hand_off` is the gateway's one call: it parks the answer and returns where mitmproxy collects it and, for a
stream, mitmproxy's stream callable, through which the relay learns that the opening reached the client.

The relay accepts its connections itself, with a backlog sized for bursts: when no descriptor is free for a
connection, it gives up one held back for the hop (relay_headroom.py) instead of leaving mitmproxy waiting.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

from .errors import sse_error_event
from .keepalive import Pings
from .listen_backlog import listen_backlog
from .open_files import EXHAUSTION_ERRNOS, DescriptorReserve

log = logging.getLogger("balancer.relay")

PATH_PREFIX = "/relay/"
# flow.metadata key set on flows a provider's answer serves, through the relay or whole (no other addon answers
# them).
RELAYED = "balancer_relayed"
# flow.metadata key of a flow that was sent to the relay before its answer was known (a chunked request body is
# streamed there as it arrives): its answer is parked under this token once the request hooks have run.
DEFERRED = "balancer_deferred"
_MAX_HEAD = 64 * 1024
# How long the relay waits before accepting again when no descriptor is free and none is held back for it.
_ACCEPT_RETRY = 0.05


class PassOn:
    """mitmproxy's stream callable for a relayed stream: passes every chunk on unchanged, and tells the relay once
    the first one is on its way to the client (the relay waits for that before it relays more)."""

    def __init__(self) -> None:
        self._forwarded = asyncio.Event()

    def __call__(self, data: bytes) -> bytes:
        if not self._forwarded.is_set():
            self._forwarded.set()
        return data

    def release(self) -> None:
        """Nothing will pass the stream on (mitmproxy reads the answer whole, or it was closed): the relay stops
        waiting for it."""
        self._forwarded.set()

    async def passed_on(self, at_most: float) -> None:
        if not self._forwarded.is_set():
            try:
                async with asyncio.timeout(at_most):
                    await self._forwarded.wait()
            except TimeoutError:
                pass


@dataclass(frozen=True)
class HandOff:
    """A provider's answer parked for one flow: where mitmproxy collects it, and the stream callable that passes
    it on to the client (None: it is not relayed as a stream)."""

    port: int
    token: str
    stream: PassOn | None

    @property
    def path(self) -> str:
        return PATH_PREFIX + self.token


@dataclass
class Parked:
    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]
    close: Callable[[], Awaitable[None]]  # releases the provider connection
    is_sse: bool = False
    # The flow's stream callable, when the answer is relayed as a stream: the relay waits until it has passed the
    # opening on before it relays more.
    pass_on: PassOn | None = None
    keepalive: float = 0.0  # seconds of silence before a `ping` goes between two of the body's whole events
    answered: Callable[[], bool] = lambda: False  # the stream has its message_delta: no ping any more
    created: float = field(default_factory=time.monotonic)
    closed: bool = False

    async def aclose(self) -> None:
        if self.pass_on is not None:
            self.pass_on.release()  # nothing waits for a closed response
        if not self.closed:
            self.closed = True
            try:
                await self.close()
            except Exception:  # closing a broken connection must not take anything else down
                log.debug("closing a parked response failed", exc_info=True)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


class RelayServer:
    def __init__(self, ttl: float = 30.0, reserve: DescriptorReserve | None = None):
        self.ttl = ttl
        self.port: int | None = None
        # Descriptors held back for relay hops: given up when an accept finds none free.
        self.reserve = reserve or DescriptorReserve()
        self.backlog = listen_backlog()
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task | None = None
        self._connections: set[asyncio.Task] = set()
        self._parked: dict[str, Parked] = {}
        self._active: dict[str, Parked] = {}  # being written out right now
        self._reaper: asyncio.Task | None = None
        self._starting: asyncio.Lock | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> int:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._listener is None:
                listener = socket.create_server(("127.0.0.1", 0), backlog=self.backlog)
                listener.setblocking(False)
                self._listener = listener
                self.port = listener.getsockname()[1]
                self._acceptor = asyncio.create_task(self._accept_forever(listener))
                self._reaper = asyncio.create_task(self._reap_forever())
        assert self.port is not None
        return self.port

    async def stop(self) -> None:
        for task in (self._reaper, self._acceptor):
            if task:
                task.cancel()
        self._reaper = self._acceptor = None
        if self._listener:
            self._listener.close()
            self._listener = None
            self.port = None
        for token in list(self._parked) + list(self._active):
            await self.discard(token)
        self.reserve.close()

    # -- parking ---------------------------------------------------------------------------------------------
    async def hand_off(
        self,
        status: int,
        headers: list[tuple[str, str]],
        body: AsyncIterator[bytes],
        close: Callable[[], Awaitable[None]],
        *,
        is_sse: bool,
        streamed: bool,
        token: str | None = None,
        keepalive: float = 0.0,
        answered: Callable[[], bool] = lambda: False,
    ) -> HandOff:
        """Park a provider's answer for one flow. `streamed`: the client gets it as a stream; the hand-off's
        `stream` is then the callable for the flow's `response.stream`. `token`: the one a deferred flow was sent
        to the relay with (its request is on its way here already). `keepalive`: seconds of silence after which a
        stream of whole events gets a `ping` (0: never), until `answered()`."""
        pass_on = PassOn() if streamed and is_sse else None
        port = self.port or await self.start()
        parked = Parked(status, headers, body, close, is_sse=is_sse, pass_on=pass_on, keepalive=keepalive,
                        answered=answered)
        token = self.park(parked, token=token)
        return HandOff(port, token, pass_on)

    def park(self, parked: Parked, token: str | None = None) -> str:
        """Park under a new token, or under the one a deferred flow was sent with."""
        token = token or secrets.token_urlsafe(18)
        self._parked[token] = parked
        return token

    def holds(self, token: str) -> bool:
        """Whether an answer is parked (or being written) under `token`."""
        return token in self._parked or token in self._active

    async def discard(self, token: str) -> None:
        """Close a parked or in-progress response (the client went away)."""
        parked = self._parked.pop(token, None) or self._active.pop(token, None)
        if parked:
            await parked.aclose()

    @property
    def open_count(self) -> int:
        return len(self._parked) + len(self._active)

    async def reap(self) -> None:
        now = time.monotonic()
        for token, parked in list(self._parked.items()):
            if now - parked.created >= self.ttl:
                log.warning("closing a provider response nobody collected within %.0fs", self.ttl)
                await self.discard(token)

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.ttl / 3))
            await self.reap()

    # -- serving ---------------------------------------------------------------------------------------------
    async def _accept_forever(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        short = False  # said once per shortage, not at every retry
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:
                if exc.errno not in EXHAUSTION_ERRNOS:
                    log.debug("relay: accept failed: %s", exc)
                elif self.reserve.release(1):
                    continue  # the slot given up is the one the next accept() gets
                elif not short:
                    short = True
                    log.warning("relay: no descriptor free to accept mitmproxy's connection; waiting for one")
                await asyncio.sleep(_ACCEPT_RETRY)
                continue
            short = False
            task = asyncio.create_task(self._serve_socket(conn))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _serve_socket(self, conn: socket.socket) -> None:
        try:
            # asyncio turns Nagle's algorithm off only for sockets it made itself: an accepted one keeps it, and a
            # stream's second small write then waits for mitmproxy's delayed ACK (40 ms on Linux) before it goes.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader, writer = await asyncio.open_connection(sock=conn, limit=_MAX_HEAD)
        except OSError:
            conn.close()
            return
        await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                target, length, chunked = _parse_head(head)
                if length:
                    await reader.readexactly(length)  # the flow's body was emptied; tolerate one anyway
                elif chunked:
                    # A deferred flow: mitmproxy ends the body once the request hooks have parked its answer.
                    await _skip_chunked_body(reader)
                token = target[len(PATH_PREFIX) :] if target.startswith(PATH_PREFIX) else ""
                parked = self._parked.pop(token, None)
                if parked is None:
                    writer.write(
                        b"HTTP/1.1 410 Gone\r\ncontent-type: text/plain\r\ncontent-length: 24\r\n\r\n"
                        b"unknown or expired token"
                    )
                    await writer.drain()
                    continue
                self._active[token] = parked
                try:
                    keep_alive = await self._write(parked, writer)
                finally:
                    self._active.pop(token, None)
                    await parked.aclose()
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _write(self, parked: Parked, writer: asyncio.StreamWriter) -> bool:
        """Write status, headers and the body as chunks arrive. False: the connection must be dropped."""
        head = [f"HTTP/1.1 {parked.status} {_reason(parked.status)}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in parked.headers]
        head.append("transfer-encoding: chunked\r\n\r\n")
        out = _Batch(writer, "".join(head).encode("latin-1", errors="replace"))
        pings = Pings(out.add, parked.keepalive, answered=parked.answered) if parked.keepalive > 0 else None
        try:
            try:
                first = parked.is_sse
                async for chunk in parked.body:
                    if chunk:
                        out.add(chunk)
                        if pings is not None:
                            pings.heard()
                        if first:
                            # A stream's opening goes out at once, and is on its way to the client before the relay
                            # works through whatever else the provider has sent meanwhile.
                            first = False
                            out.flush()
                            await _until_passed_on(parked.pass_on)
                        await writer.drain()  # also how a client that went away is noticed
            except (ConnectionError, RuntimeError):
                raise ConnectionResetError("client side of the relay went away") from None
            except Exception as exc:  # the provider broke off mid-body
                if not parked.is_sse or parked.closed:
                    log.info("provider response broke off: %s", type(exc).__name__)
                    out.flush()
                    return False
                out.add(sse_error_event("api_error", "the provider's stream broke off before the end"))
            out.flush(end=True)
        finally:
            if pings is not None:
                pings.stop()
            out.cancel()
        await writer.drain()
        return True


# Body bytes the relay collects before it writes them without waiting for the body to pause.
_FLUSH_AT = 64 * 1024
# Longest wait for a stream's opening to be passed on (a safety net: the flow's end also ends the wait).
_FORWARD_WAIT = 1.0


async def _until_passed_on(pass_on: PassOn | None) -> None:
    if pass_on is None:  # nobody will tell: one turn of the loop for mitmproxy
        await asyncio.sleep(0)
    else:
        await pass_on.passed_on(_FORWARD_WAIT)


class _Batch:
    """What the relay writes, sent once the body has nothing more ready (at the next turn of the event loop):
    the pieces a provider sent together become one HTTP chunk, one write to and one read by mitmproxy, and one
    write to the client, not one each. Nothing waits longer than the body does."""

    def __init__(self, writer: asyncio.StreamWriter, head: bytes):
        self._writer = writer
        self._head = head
        self._parts: list[bytes] = []
        self._size = 0
        self._handle: asyncio.Handle | None = None

    def add(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size >= _FLUSH_AT:
            self.flush()
        elif self._handle is None:
            self._handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self, end: bool = False) -> None:
        self.cancel()
        out = [self._head] if self._head else []
        self._head = b""
        if self._parts:
            out += [b"%x\r\n" % self._size, *self._parts, b"\r\n"]
            self._parts = []
            self._size = 0
        if end:
            out.append(b"0\r\n\r\n")
        if out and not self._writer.is_closing():
            self._writer.write(b"".join(out))

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _parse_head(head: bytes) -> tuple[str, int, bool]:
    """(request target, content-length, whether the body is chunked)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    target = parts[1] if len(parts) >= 2 else ""
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            try:
                length = int(value.strip())
            except ValueError:
                length = 0
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
    return target, length, chunked


async def _skip_chunked_body(reader: asyncio.StreamReader) -> None:
    """Read a chunked body to its end, keeping nothing (what reaches the relay is empty or a few bytes)."""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                pass
            return
        await reader.readexactly(size + 2)
