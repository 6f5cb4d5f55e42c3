"""A provider's answer body read whole within a deadline, and a body handed on as a one-chunk stream: what both
provider adapters and the failover's error summary need."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx

# The most of a provider's answer read whole (a message or an error, never a stream): far above any real answer
# (64k output tokens are well under 1 MiB), far below what a hostile provider could make the balancer hold.
MAX_WHOLE_ANSWER = 16 * 1024 * 1024


async def read_body(response: httpx.Response, deadline: float, limit: int | None = None) -> tuple[bytes, bool]:
    """The body, read until `deadline` (a time.monotonic() value) or `limit` bytes: (bytes, complete)."""
    chunks: list[bytes] = []
    size = 0
    iterator = response.aiter_bytes()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b"".join(chunks), False
        try:
            chunk = await asyncio.wait_for(iterator.__anext__(), remaining)
        except StopAsyncIteration:
            return b"".join(chunks), True
        except (TimeoutError, httpx.HTTPError, OSError):
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
        if limit is not None and size >= limit:
            return b"".join(chunks), False


async def read_answer(response: httpx.Response, deadline: float, idle_timeout: float) -> tuple[bytes, bool]:
    """A whole answer (a message, an error): read until the attempt's deadline, and at least for `idle_timeout`
    (the headers may have come just before the deadline)."""
    return await read_body(response, max(deadline, time.monotonic() + idle_timeout), MAX_WHOLE_ANSWER)


async def one_chunk(body: bytes) -> AsyncIterator[bytes]:
    """A body read whole, relayed as a stream of one chunk."""
    yield body
