"""A streamed answer's commit point, and a well-formed end whatever the provider does after it.

Before the first content delta nothing has reached the client, so an `event: error` (e.g. `overloaded_error`
with HTTP 200), a silent provider or a stream that breaks off can still fail over to the next provider: the
opening events (`message_start`, `content_block_start`, `ping`) are held until the first content delta, then
sent at once. After that point a failure ends the client's stream with an Anthropic `event: error` and never
with a silently truncated stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

import httpx

from .errors import sse_error_event
from .health import OVERLOADED, STREAM_ERROR, TIMEOUT
from .sse import SSESplitter, parse_event
from .upstream import describe_exception

# Events after which the answer is committed to this provider.
_COMMIT_EVENTS = frozenset({"content_block_delta", "message_delta", "message_stop"})
# An event whose bytes contain none of these is neither a commit event nor an error: it need not be parsed.
_WATCHED_NAMES = (b"error", b"_delta", b"message_stop")


class StreamFailure(Exception):
    """The provider failed before the commit point: the request can go to the next provider."""

    def __init__(self, reason: str, kind: str = STREAM_ERROR):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # a failure class from health.py


def _error_event_failure(data: str) -> StreamFailure:
    try:
        error = json.loads(data).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    kind = error.get("type", "error") if isinstance(error, dict) else "error"
    message = error.get("message", "") if isinstance(error, dict) else ""
    text = f"error event before content: {kind}" + (f": {message}" if message else "")
    return StreamFailure(text[:200], OVERLOADED if kind in ("overloaded_error", "rate_limit_error") else STREAM_ERROR)


async def next_chunk_before(chunks: AsyncIterator[bytes], deadline: float) -> bytes | None:
    """The provider's next chunk before the commit point, or None at the end of its stream. Raises
    StreamFailure when nothing comes by `deadline` (a `time.monotonic()` value) or the stream breaks."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise StreamFailure("no content before the deadline", TIMEOUT)
    try:
        return await asyncio.wait_for(chunks.__anext__(), remaining)
    except StopAsyncIteration:
        return None
    except TimeoutError:
        raise StreamFailure("no content before the deadline", TIMEOUT) from None
    except (httpx.HTTPError, OSError) as exc:
        raise StreamFailure(f"stream broke before any content: {describe_exception(exc)}") from None


async def hold_until_content(chunks: AsyncIterator[bytes], deadline: float) -> bytes:
    """Read the opening events until the first content delta; return the raw bytes read so far.

    Raises StreamFailure for an error event, an end or a break before any content, or no content by
    `deadline` (a `time.monotonic()` value)."""
    splitter = SSESplitter()
    held: list[bytes] = []
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise StreamFailure("no content before the deadline", TIMEOUT)
    try:
        async with asyncio.timeout(remaining):  # one deadline for the whole opening
            async for chunk in chunks:
                held.append(chunk)
                for raw in splitter.feed_raw(chunk):
                    if not any(name in raw for name in _WATCHED_NAMES):
                        continue  # message_start, content_block_start, ping: nothing to decide yet
                    event = parse_event(raw)
                    if event.event == "error":
                        raise _error_event_failure(event.data)
                    if event.event in _COMMIT_EVENTS:
                        return b"".join(held)
    except TimeoutError:
        raise StreamFailure("no content before the deadline", TIMEOUT) from None
    except (httpx.HTTPError, OSError) as exc:
        raise StreamFailure(f"stream broke before any content: {describe_exception(exc)}") from None
    raise StreamFailure("stream ended before any content")


class EndWatch:
    """Watches committed stream bytes, cheaply, for `message_stop` and `error` events.

    An event line starts right after a newline byte; JSON data never holds a raw newline, so generated text
    that merely mentions "event: error" does not match."""

    _STOP = (b"\nevent: message_stop", b"\nevent:message_stop")
    _ERROR = (b"\nevent: error", b"\nevent:error")

    def __init__(self) -> None:
        self._tail = b"\n"  # the stream's start counts as a line start
        self.saw_stop = False
        self.saw_error = False
        self.saw_overload = False
        self._error_at: int | None = None  # bytes of the error event still to look through for its type

    def feed(self, chunk: bytes) -> None:
        window = self._tail + chunk
        if not self.saw_stop and b"message_stop" in window:
            self.saw_stop = any(m in window for m in self._STOP)
        if not self.saw_error and b"error" in window:
            positions = [window.find(m) for m in self._ERROR if m in window]
            if positions:
                self.saw_error = True
                self._error_at = min(positions)
        if self._error_at is not None:
            if b"overloaded_error" in window[self._error_at :]:
                self.saw_overload = True
            self._error_at = 0 if len(window) - self._error_at < 512 else None
        self._tail = window[-24:]


def broke_off_reason(exc: BaseException, idle_timeout: float) -> str:
    """Why a committed stream ended early, from the provider connection's exception."""
    if isinstance(exc, httpx.ReadTimeout):
        return f"the provider's stream was idle for more than {idle_timeout:g}s"
    return f"the provider's stream broke off: {describe_exception(exc)}"


async def guarded(
    held: bytes,
    rest: AsyncIterator[bytes],
    on_failure: Callable[[str, str], None],
    idle_timeout: float,
) -> AsyncIterator[bytes]:
    """The held opening, then the rest of the stream; any failure after the commit point becomes an
    Anthropic `event: error` at the end, and is reported through `on_failure(reason, failure_class)`."""
    watch = EndWatch()
    watch.feed(held)
    yield held
    failure: str | None = None
    try:
        async for chunk in rest:
            watch.feed(chunk)
            yield chunk
    except (httpx.HTTPError, OSError) as exc:
        if not watch.saw_stop:  # a connection dropped after the answer was complete is no failure
            failure = broke_off_reason(exc, idle_timeout)
    if failure is None and watch.saw_error:
        on_failure("error event mid-stream", OVERLOADED if watch.saw_overload else STREAM_ERROR)
        return
    if failure is None and not watch.saw_stop:
        failure = "the provider's stream ended before message_stop"
    if failure is not None:
        on_failure(failure, STREAM_ERROR)
        yield sse_error_event("api_error", failure)
