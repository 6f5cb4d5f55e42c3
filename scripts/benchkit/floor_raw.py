"""Measuring instrument, not product code (`scripts/bench --floor`): the least an addon that owns provider I/O can
do, with no HTTP client library. A mitmdump script.

The request hook sends the body as the client sent it, in one hand-written HTTP/1.1 exchange on a kept connection
(one list of idle ones), and reads the answer's head. A JSON answer is read whole and set on the flow. A stream is
held until its first `content_block_delta` (the balancer holds it that long, so that it can still fail over), then
handed to the loopback relay (floor_relay.py) with the rest. No failover, no parsing of the body, no headers kept.

    mitmdump -s scripts/benchkit/floor_raw.py --mode reverse:http://127.0.0.1:9 --set floor_upstream=http://127.0.0.1:PORT/ok
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import SplitResult, urlsplit

from floor_relay import Relay, error_answer, stream_relayed
from mitmproxy import ctx, http

MARKER = b"content_block_delta"


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk of a chunked body; b"" for the last one (its trailing CRLF read too)."""
    size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
    data = await reader.readexactly(size + 2)
    return data[:-2]


def answer_head(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    """The status and the headers (names lowercased) of an HTTP/1.1 answer head."""
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(b" ", 2)[1]), headers


class RawFloor:
    def __init__(self) -> None:
        self.relay = Relay()
        self.idle: list[Connection] = []
        self.upstream: SplitResult = urlsplit("")

    def load(self, loader) -> None:  # type: ignore[no-untyped-def]
        loader.add_option("floor_upstream", str, "", "The provider's base URL, e.g. http://127.0.0.1:PORT/ok")

    def configure(self, updated: set[str]) -> None:
        if "floor_upstream" in updated:
            self.upstream = urlsplit(ctx.options.floor_upstream)

    async def running(self) -> None:
        await self.relay.start()

    async def request(self, flow: http.HTTPFlow) -> None:
        try:
            await self._exchange(flow)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
            flow.response = error_answer(exc)

    async def _exchange(self, flow: http.HTTPFlow) -> None:
        body = flow.request.raw_content or b""
        conn = self.idle.pop() if self.idle else Connection(*await asyncio.open_connection(
            self.upstream.hostname, self.upstream.port, limit=1 << 20))
        conn.writer.write(b"POST %b%b HTTP/1.1\r\nhost: %b\r\ncontent-type: application/json\r\n"
                          b"anthropic-version: 2023-06-01\r\nx-api-key: floor\r\ncontent-length: %d\r\n\r\n"
                          % (self.upstream.path.encode(), flow.request.path.encode(), self.upstream.netloc.encode(),
                             len(body)))
        conn.writer.write(body)
        await conn.writer.drain()
        status, headers = answer_head(await conn.reader.readuntil(b"\r\n\r\n"))
        chunked = headers.get(b"transfer-encoding") == b"chunked"
        if not headers.get(b"content-type", b"").startswith(b"text/event-stream"):
            if chunked:
                data = b"".join([piece async for piece in self._chunks(conn)])
            else:
                data = await conn.reader.readexactly(int(headers.get(b"content-length", b"0")))
                self.idle.append(conn)
            flow.response = http.Response.make(status, data, {"content-type": "application/json"})
            return
        rest = self._chunks(conn)
        held = b""
        async for piece in rest:
            held += piece
            if MARKER in held:
                break
        self.relay.hand_off(flow, status, held, rest)

    async def _chunks(self, conn: Connection) -> AsyncIterator[bytes]:
        """A chunked body piece by piece; the connection goes back to the idle list once it is read to its end."""
        while piece := await read_chunk(conn.reader):
            yield piece
        self.idle.append(conn)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        stream_relayed(flow)


addons = [RawFloor()]
