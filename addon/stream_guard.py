"""A streamed answer's commit point, and a well-formed end whatever the provider does after it.

Before the first content delta nothing has reached the client, so an `event: error` (e.g. `overloaded_error`
with HTTP 200), an event that is not valid SSE JSON, a silent provider or a stream that breaks off can still fail
over to the next provider: the opening events (`message_start`, `content_block_start`, `ping`) are held until the
first content delta, then sent at once. After that point the client gets whole, valid events only, and a failure
ends its stream with an Anthropic `event: error` (the provider's own, its message made fit to pass on, or ours),
never with a silently truncated stream or an event it cannot parse.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from .anthropic_events import PING, CheckedEvent, check_event, error_of, failure_class_of
from .error_text import REASON_CHARS, public_message
from .errors import bounded_message, sse_error_event
from .health import STREAM_ERROR, TIMEOUT
from .sse import SSESplitter
from .upstream import describe_exception

# Events after which the answer is committed to this provider.
_COMMIT_EVENTS = frozenset({"content_block_delta", "message_delta", "message_stop"})
# An error type passed on as the provider named it (anything else becomes `api_error`).
_ERROR_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class StreamFailure(Exception):
    """The provider failed before the commit point: the request can go to the next provider."""

    def __init__(self, reason: str, kind: str = STREAM_ERROR):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # a failure class from health.py


def _checked(raw: bytes) -> tuple[bytes, CheckedEvent]:
    """The event as it may be passed on, and what it holds."""
    event = check_event(raw)
    if event.problem and event.name == "ping":  # clients skip pings unread: a broken one is replaced, no failure
        return PING, CheckedEvent("ping", {"type": "ping"})
    return raw, event


def _error_event_failure(data: dict[str, Any] | None) -> StreamFailure:
    kind, message = error_of(data)
    kind = kind or "error"
    message = public_message(message)
    text = f"error event before content: {kind}" + (f": {message}" if message else "")
    return StreamFailure(bounded_message(text, REASON_CHARS), failure_class_of(kind))


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


@dataclass
class Opening:
    """What `hold_until_content` read: the opening up to the first content, and the rest of the same chunks."""

    held: bytes  # the opening events and the first content event, checked
    after: list[bytes] = field(default_factory=list)  # whole events that came after it, not checked yet
    splitter: SSESplitter = field(default_factory=SSESplitter)  # holds the start of an unfinished event


async def hold_until_content(chunks: AsyncIterator[bytes], deadline: float) -> Opening:
    """Read the opening events until the first content delta.

    Raises StreamFailure for an error event or an invalid event, an end or a break before any content, or no
    content by `deadline` (a `time.monotonic()` value)."""
    splitter = SSESplitter()
    held: list[bytes] = []
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise StreamFailure("no content before the deadline", TIMEOUT)
    try:
        async with asyncio.timeout(remaining):  # one deadline for the whole opening
            async for chunk in chunks:
                events = splitter.feed_raw(chunk)
                for position, event_bytes in enumerate(events):
                    raw, event = _checked(event_bytes)
                    if event.problem:
                        raise StreamFailure(bounded_message(f"invalid event before content: {event.problem}",
                                                            REASON_CHARS))
                    if event.name == "error":
                        raise _error_event_failure(event.data)
                    held.append(raw)
                    if event.name in _COMMIT_EVENTS:
                        return Opening(b"".join(held), events[position + 1 :], splitter)
    except TimeoutError:
        raise StreamFailure("no content before the deadline", TIMEOUT) from None
    except (httpx.HTTPError, OSError) as exc:
        raise StreamFailure(f"stream broke before any content: {describe_exception(exc)}") from None
    raise StreamFailure("stream ended before any content")


def broke_off_reason(exc: BaseException, idle_timeout: float) -> str:
    """Why a committed stream ended early, from the provider connection's exception."""
    if isinstance(exc, httpx.ReadTimeout):
        return f"the provider's stream was idle for more than {idle_timeout:g}s"
    return f"the provider's stream broke off: {describe_exception(exc)}"


class CommittedStream:
    """The events of a stream after its commit point, checked one by one: valid events pass unchanged; an invalid
    one, or the provider's `event: error`, ends the stream with an error event; after `message_stop` nothing more
    is passed on (the answer is complete)."""

    def __init__(self, splitter: SSESplitter, on_failure: Callable[[str, str], None],
                 redact: Callable[[str], str] = str):
        self._splitter = splitter
        self._on_failure = on_failure
        self._redact = redact
        self.complete = False  # `message_stop` went through
        self.failed = False  # the stream ended with an error event

    @property
    def over(self) -> bool:
        return self.complete or self.failed

    def feed(self, chunk: bytes) -> bytes:
        return b"" if self.over else self.take(self._splitter.feed_raw(chunk))

    def take(self, events: list[bytes]) -> bytes:
        out: list[bytes] = []
        for raw in events:
            if self.over:
                break
            raw, event = _checked(raw)
            if event.problem:
                out.append(self.fail(f"the provider sent an invalid event mid-stream: {event.problem}"))
            elif event.name == "error":
                out.append(self._provider_error(event.data))
            else:
                self.complete = event.name == "message_stop"
                out.append(raw)
        return b"".join(out)

    def end(self) -> bytes:
        """The provider's stream ended: an event left without its blank line still counts, then the stream must
        have been complete."""
        if self.over:
            return b""
        rest = self._splitter.pending().rstrip(b"\r\n")
        out = self.take([rest + b"\n\n"]) if rest.strip() and not check_event(rest).problem else b""
        if not self.over:
            out += self.fail("the provider's stream ended before message_stop")
        return out

    def fail(self, reason: str) -> bytes:
        """Our own error event ends the stream."""
        message = public_message(reason, self._redact)
        self.failed = True
        self._on_failure(bounded_message(message, REASON_CHARS), STREAM_ERROR)
        return sse_error_event("api_error", message)

    def _provider_error(self, data: dict[str, Any] | None) -> bytes:
        kind, message = error_of(data)
        kind = kind if _ERROR_TYPE.fullmatch(kind) else "api_error"
        message = public_message(message, self._redact) or f"the provider reported {kind} mid-stream"
        self.failed = True
        self._on_failure(bounded_message(f"error event mid-stream: {kind}: {message}", REASON_CHARS),
                         failure_class_of(kind))
        return sse_error_event(kind, message)


async def guarded(
    opening: Opening,
    rest: AsyncIterator[bytes],
    on_failure: Callable[[str, str], None],
    idle_timeout: float,
    redact: Callable[[str], str] = str,
) -> AsyncIterator[bytes]:
    """The held opening, then the rest of the stream as whole, checked events (`CommittedStream`); any failure
    after the commit point becomes an `event: error` at the end, reported through `on_failure(reason, class)`.
    Error messages pass through `redact`."""
    stream = CommittedStream(opening.splitter, on_failure, redact)
    yield opening.held + stream.take(opening.after)
    if stream.failed:
        return
    try:
        async for chunk in rest:
            out = stream.feed(chunk)
            if out:
                yield out
            if stream.failed:
                return  # closing the provider's response stops it generating
    except (httpx.HTTPError, OSError) as exc:
        if not stream.complete:  # a connection dropped after the answer was complete is no failure
            yield stream.fail(broke_off_reason(exc, idle_timeout))
            return
    out = stream.end()
    if out:
        yield out
