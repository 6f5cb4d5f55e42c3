"""What went over the wire in one provider attempt, taken at the provider boundary: the request as sent, the
answer's status and headers, and its body bytes as they came (before any decoding or translation) up to a bound.

The body is copied as the adapters read it, by a tee on the httpx response's byte stream: nothing is read that
would not have been read anyway, and a stream is not held back (a copy of each chunk while under the bound, a
count after it). The attempt's own flow is made from this later (attempt_flows.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx


@dataclass
class ProviderWire:
    """One attempt at one provider, as far as it got."""

    provider: str
    limit: int  # bytes of the answer's body kept
    request: httpx.Request | None = None
    sent_at: float | None = None  # time.time() when the request went out
    status: int | None = None  # None: no response headers came
    reason: str = ""
    http_version: str = "HTTP/1.1"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    answered_at: float | None = None  # when the response headers came
    body: bytearray = field(default_factory=bytearray)  # the first `limit` bytes of the body, as they came
    seen: int = 0  # body bytes read in all
    ended_at: float | None = None  # when the body ended or was closed, or the attempt failed
    error: str | None = None  # why no answer came (a transport failure, a timeout, the client leaving)
    server: tuple[str, int] | None = None  # the provider's address, as connected to
    local: tuple[str, int] | None = None  # the balancer's end of that connection

    @property
    def cut(self) -> bool:
        """Part of the body that was read is not kept (over the bound)."""
        return self.seen > len(self.body)

    def sending(self, request: httpx.Request) -> None:
        self.request = request
        self.sent_at = time.time()

    def answered(self, response: httpx.Response) -> None:
        """The response headers came: keep them, and tee the body from now on."""
        self.answered_at = time.time()
        self.status = response.status_code
        self.reason = response.reason_phrase
        self.http_version = "HTTP/2.0" if response.http_version == "HTTP/2" else response.http_version
        self.headers = list(response.headers.raw)
        self.server, self.local = _addresses(response)
        if isinstance(response.stream, httpx.AsyncByteStream):
            response.stream = _Tee(response.stream, self)

    def failed(self, reason: str) -> None:
        self.error = reason
        if self.ended_at is None:
            self.ended_at = time.time()

    def _take(self, chunk: bytes) -> None:
        self.seen += len(chunk)
        room = self.limit - len(self.body)
        if room > 0:
            self.body += chunk[:room]

    def _ended(self) -> None:
        if self.ended_at is None:
            self.ended_at = time.time()


class _Tee(httpx.AsyncByteStream):
    """The response's byte stream, copied into the wire record as it is read."""

    def __init__(self, inner: httpx.AsyncByteStream, wire: ProviderWire):
        self._inner = inner
        self._wire = wire

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._wire._take(chunk)
            yield chunk
        self._wire._ended()

    async def aclose(self) -> None:
        self._wire._ended()
        await self._inner.aclose()


def _addresses(response: httpx.Response) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """(provider, balancer) ends of the connection, where the transport tells them (HTTP/1.1 does)."""
    stream = response.extensions.get("network_stream")
    get = getattr(stream, "get_extra_info", None)
    if get is None:
        return None, None
    try:
        server, local = get("server_addr"), get("client_addr")
    except (AttributeError, KeyError, TypeError, OSError):  # a transport without them
        return None, None
    return _address(server), _address(local)


def _address(value: object) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2 and isinstance(value[0], str) and isinstance(value[1], int):
        return value[0], value[1]
    return None
