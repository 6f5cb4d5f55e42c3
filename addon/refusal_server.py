"""A loopback server that answers every request `413 request_too_large` and discards what it is sent."""

from __future__ import annotations

import asyncio

from .errors import error_body
from .listen_backlog import listen_backlog
from .responses import PROVIDER_HEADER


class RefusalServer:
    """A loopback server that answers every request `413` and reads what the client still sends, discarding it.

    mitmproxy reads a request body it is not told to stream into memory whole, even when an addon has already
    answered; and when its own `body_size_limit` stops reading, the client is left blocked on its upload. So a
    body that is too large is *streamed* (mitmproxy's `stream_large_bodies`, kept at `max_body_size`) to this
    server instead: nothing is kept, the client gets an Anthropic-shaped `413`, and its connection is closed."""

    def __init__(self) -> None:
        self.port: int | None = None
        self.message = "request body over the size limit"
        self._server: asyncio.Server | None = None
        self._starting = asyncio.Lock()

    async def start(self) -> int:
        async with self._starting:
            if self._server is None:
                self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=listen_backlog())
                self.port = self._server.sockets[0].getsockname()[1]
        assert self.port is not None
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            self.port = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = error_body("request_too_large", self.message)
        head = (
            "HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\n"
            f"{PROVIDER_HEADER}: none\r\nconnection: close\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(head.encode() + body)
            await writer.drain()
            while await reader.read(_DRAIN_READ):  # until mitmproxy has passed on the whole upload
                pass
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


_DRAIN_READ = 256 * 1024
