"""httpcore's network backend on asyncio's own streams: the provider connections of the balancer's httpx client.

httpcore's default backend on asyncio goes through anyio, which yields to the event loop at every read and
write (a checkpoint) and builds a cancel scope for each: about ten extra turns of the event loop for one small
request and its answer, a tenth of the balancer's CPU per request. asyncio's streams do the same work without
them; the errors are httpcore's as before (its timeouts, ConnectError, ReadError, WriteError), each caused by the
operating system's, which names the reason (upstream.describe_exception).

The connection's socket is looked up once: before each request and after each response the connection pool asks
every idle connection whether it is readable (the server closed it), and anyio answered that by building all of
the socket's attributes, a getpeername() system call included.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore

SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
# asyncio's streams hold this much unread data before they stop reading from the socket; httpcore reads 64 KiB at
# a time.
_BUFFER = 256 * 1024


def is_readable(sock: Any) -> bool:
    """httpcore's test of an idle connection: readable means the server closed it (or sent what it should not
    have); a socket that is gone counts as readable."""
    fd = sock.fileno() if sock is not None else -1
    if fd < 0:
        return True
    if not hasattr(select, "poll"):  # Windows
        return bool(select.select([fd], [], [], 0)[0])
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    return bool(poll.poll(0))


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader = reader
        self._writer = writer
        self._socket = writer.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc) or "read timeout") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc) or "write timeout") from exc
        except (OSError, RuntimeError) as exc:  # RuntimeError: the transport is closed already
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        # Not waiting for the close: that would raise again the error the connection broke with, and raising it
        # again while the request's error is being handled unlinks it from that error (the reason is lost).
        self._writer.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except BaseException as exc:
            self._writer.transport.abort()
            if isinstance(exc, TimeoutError):
                raise httpcore.ConnectTimeout(str(exc) or "TLS handshake timeout") from exc
            if isinstance(exc, OSError):  # ssl.SSLError included
                raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
            raise
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return self._reader.at_eof() or is_readable(self._socket)
        if info == "socket":
            return self._socket
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None, limit=_BUFFER
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc) or "connect timeout") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        except UnicodeError as exc:  # a name the resolver cannot even be asked about (a label over 63 characters)
            unresolvable = socket.gaierror(socket.EAI_NONAME, f"invalid host name: {exc}")
        else:
            _set_options(writer, socket_options)  # asyncio turned Nagle's algorithm off already
            return AsyncioStream(reader, writer)
        # Raised outside the handler, linked as its context: httpcore's pool drops the cause of what it re-raises.
        error = httpcore.ConnectError(str(unresolvable))
        error.__context__ = unresolvable
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path, limit=_BUFFER)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc) or "connect timeout") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        _set_options(writer, socket_options)
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _set_options(writer: asyncio.StreamWriter, options: Iterable[SocketOption] | None) -> None:
    sock: socket.socket | None = writer.get_extra_info("socket")
    if sock is not None:
        for option in options or ():
            sock.setsockopt(*option)
