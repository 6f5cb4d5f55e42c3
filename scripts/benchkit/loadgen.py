"""A lean HTTP/1.1 load generator on asyncio streams: keep-alive connections, one request at a time on each.

It stands in for the client so that the client's own cost stays small and equal for every target: a full SDK
spends more CPU per request than the proxies being compared, on a machine with only two cores. Timings are taken
with `time.perf_counter()` from just before the request is written: `first_event` is when the first complete SSE
event (or, for JSON, the whole body) has arrived, `first_content` when the first event with text did (what a user
sees appear; a proxy that holds the opening events until then is not credited for sending them early),
`event_times` when each SSE event completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Timing:
    status: int
    first_event: float  # seconds
    total: float
    event_times: list[float] = field(default_factory=list)
    first_content: float | None = None  # when the first event with text arrived: what a user sees appear


# An Anthropic text delta, or an OpenAI chunk with content (the bench fake's deltas are "word<n> ").
CONTENT_MARKERS = (b"content_block_delta", b'"content":"word')


class ProtocolError(Exception):
    pass


class Connection:
    """One keep-alive connection to `url`'s host; reopened when the server closes it."""

    def __init__(self, url: str, headers: dict[str, str] | None = None):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.base_path = parts.path.rstrip("/")
        extra = {"host": f"{self.host}:{self.port}", "content-type": "application/json",
                 "anthropic-version": "2023-06-01", "x-api-key": "bench-client", **(headers or {})}
        self.fixed_headers = "".join(f"{k}: {v}\r\n" for k, v in extra.items()).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _ensure_open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, path: str, body: bytes,
                      on_first_event: Callable[[], Awaitable[None]] | None = None) -> Timing:
        """POST `body` to `path`; returns its timing. `on_first_event` is awaited once the first content is in."""
        reader, writer = await self._ensure_open()
        started = time.perf_counter()
        # The head, then the body, in two writes: what httpx (under the anthropic SDK) does.
        writer.write(b"POST %b HTTP/1.1\r\n%bcontent-length: %d\r\n\r\n"
                     % ((self.base_path + path).encode(), self.fixed_headers, len(body)))
        await writer.drain()
        writer.write(body)
        try:
            return await self._read_response(reader, started, on_first_event)
        except (asyncio.IncompleteReadError, ConnectionError, ProtocolError, ValueError):
            self.close()
            raise

    async def _read_response(self, reader: asyncio.StreamReader, started: float,
                             on_first_event: Callable[[], Awaitable[None]] | None) -> Timing:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status_parts = lines[0].split(" ", 2)
        if len(status_parts) < 2 or not status_parts[0].startswith("HTTP/1."):
            raise ProtocolError(lines[0])
        status = int(status_parts[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        event_times: list[float] = []
        first: float | None = None
        content: float | None = None
        pending = b""  # SSE text not yet ended by a blank line

        async def got(data: bytes) -> None:
            nonlocal pending, first, content
            pending += data
            count = pending.count(b"\n\n")
            if count:
                now = time.perf_counter() - started
                event_times.extend([now] * count)
                end = pending.rfind(b"\n\n") + 2
                if content is None and any(marker in pending[:end] for marker in CONTENT_MARKERS):
                    content = now
                    if on_first_event is not None:
                        await on_first_event()
                pending = pending[end:]
                if first is None:
                    first = now

        if headers.get("transfer-encoding") == "chunked":
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0], 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    break
                await got(data[:-2])
        else:
            length = int(headers.get("content-length", "0"))
            await got(await reader.readexactly(length) if length else b"")
        total = time.perf_counter() - started
        if headers.get("connection") == "close":
            self.close()
        return Timing(status, first if first is not None else total, total, event_times,
                      content if content is not None else first if first is not None else total)


def request_body(stream: bool, model: str = "claude-sonnet-4") -> bytes:
    return json.dumps({"model": model, "max_tokens": 16, "stream": stream,
                       "messages": [{"role": "user", "content": "Hi"}]}).encode()


async def measure(url: str, path: str, body: bytes, count: int, concurrency: int,
                  headers: dict[str, str] | None = None) -> tuple[list[Timing], int]:
    """`count` requests, `concurrency` connections busy at a time; returns the timings and the error count."""
    timings: list[Timing] = []
    errors = 0
    remaining = iter(range(count))

    async def worker() -> None:
        nonlocal errors
        connection = Connection(url, headers)
        try:
            for _ in remaining:
                try:
                    timing = await connection.request(path, body)
                except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError):
                    errors += 1
                    continue
                if timing.status == 200:
                    timings.append(timing)
                else:
                    errors += 1
        finally:
            connection.close()

    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return timings, errors


async def throughput(url: str, path: str, body: bytes, concurrency: int, seconds: float,
                     headers: dict[str, str] | None = None) -> tuple[float, int, int]:
    """Requests answered with 200 per second over `seconds`, with `concurrency` connections; (rate, ok, errors)."""
    ok = errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal ok, errors
        connection = Connection(url, headers)
        try:
            while time.perf_counter() < stop_at:
                try:
                    timing = await connection.request(path, body)
                except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError):
                    errors += 1
                    continue
                ok += timing.status == 200
                errors += timing.status != 200
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return ok / (time.perf_counter() - started), ok, errors


async def hold_streams(url: str, path: str, count: int, while_open: Callable[[int], Awaitable[None]],
                       timeout: float = 60, body: bytes | None = None) -> tuple[int, float]:
    """Opens `count` streamed requests at once; when each has its first content in (or `timeout` passed), awaits
    `while_open(number_open)`, then closes them all. Returns how many were open at that moment, and the seconds
    from the start until the last of them opened (or until the timeout)."""
    opened = 0
    all_open = asyncio.Event()
    release = asyncio.Event()
    body = body if body is not None else request_body(stream=True)
    started = time.perf_counter()

    async def first_event() -> None:
        nonlocal opened
        opened += 1
        if opened == count:
            all_open.set()
        await release.wait()

    async def one() -> None:
        connection = Connection(url)
        try:
            await connection.request(path, body, on_first_event=first_event)
        except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError):
            pass
        finally:
            connection.close()

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_open.wait(), timeout)
    took = time.perf_counter() - started
    at_measurement = opened
    await while_open(at_measurement)
    release.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return at_measurement, took


async def worst_gaps(url: str, path: str, body: bytes, streams: int,
                     meanwhile: Callable[[], Awaitable[None]] | None = None) -> tuple[list[float], int]:
    """Runs `streams` streamed requests at once and, once every one has its first text, awaits `meanwhile()` (if
    given) beside them; returns each completed stream's worst gap between events in seconds, and the error count."""
    started = 0
    all_started = asyncio.Event()

    async def first_text() -> None:
        nonlocal started
        started += 1
        if started == streams:
            all_started.set()

    async def one() -> float | None:
        connection = Connection(url)
        try:
            timing = await connection.request(path, body, on_first_event=first_text)
        except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError):
            return None
        finally:
            connection.close()
        times = timing.event_times
        return max((b - a for a, b in itertools.pairwise(times)), default=None)

    tasks = [asyncio.create_task(one()) for _ in range(streams)]
    if meanwhile is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_started.wait(), 60)
        await meanwhile()
    gaps = await asyncio.gather(*tasks)
    return [g for g in gaps if g is not None], sum(g is None for g in gaps)
