"""Measuring instrument, not product code: the loopback hop both floor addons (floor_httpx.py, floor_raw.py) hand
their streams through, as the balancer does (docs/design.md).

mitmproxy cannot give a flow an answer that is still arriving, so an addon that talks to the provider itself parks
the open stream here under a one-use token and points the flow at this server; mitmproxy then fetches it like any
upstream answer and streams it to the client. The server writes the bytes held so far, then the rest as they come,
each piece a chunk of its own. A stream nobody claims is not cleaned up: the bench always claims them.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

from mitmproxy import http

RELAYED = "floor_relayed"  # flow.metadata key of a flow sent to the relay: its answer is streamed
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class Relay:
    def __init__(self) -> None:
        self.port = 0
        self._parked: dict[str, tuple[int, bytes, AsyncIterator[bytes]]] = {}
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def hand_off(self, flow: http.HTTPFlow, status: int, held: bytes, rest: AsyncIterator[bytes]) -> None:
        """Park a stream whose first bytes are `held` and send the flow to fetch it from here."""
        token = secrets.token_urlsafe(12)
        self._parked[token] = (status, held, rest)
        request = flow.request
        request.scheme, request.host, request.port, request.path = "http", "127.0.0.1", self.port, "/" + token
        request.content = b""
        flow.metadata[RELAYED] = True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                parked = self._parked.pop(head.split(b" ", 2)[1][1:].decode("latin-1"), None)
                if parked is None:
                    writer.write(_NOT_FOUND)
                    continue
                status, held, rest = parked
                writer.write(b"HTTP/1.1 %d OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                             % status + chunk(held))
                async for data in rest:
                    writer.write(chunk(data))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def stream_relayed(flow: http.HTTPFlow) -> None:
    """The responseheaders hook of a floor: what comes from the relay is streamed to the client as it arrives."""
    if flow.metadata.get(RELAYED) and flow.response is not None:
        flow.response.stream = True


def error_answer(exc: BaseException) -> http.Response:
    """What a floor answers when its exchange with the provider failed: a 502 the bench counts as an error (never
    the reverse target's answer, which would pass for the floor's)."""
    return http.Response.make(502, b'{"type":"error","error":{"type":"api_error","message":"%b"}}'
                              % type(exc).__name__.encode(), {"content-type": "application/json"})
