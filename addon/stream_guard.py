"""A streamed answer's commit point, and a well-formed end whatever the provider does after it.

Before the first content delta nothing has reached the client, so an `event: error` (e.g. `overloaded_error`
with HTTP 200), an event that is not valid SSE JSON, a silent provider or a stream that breaks off can still fail
over to the next provider: the opening events (`message_start`, `content_block_start`, `ping`) are held until the
first content delta, then sent at once. After that point the client gets whole, valid events only, and a failure
ends its stream with an Anthropic `event: error` (the provider's own, its message made fit to pass on, or ours),
never with a silently truncated stream or an event it cannot parse.

Both provider types go through here: the events come from the stream's `EventSource` (stream_events.py: a
provider's own events, or a translation), each is checked once, and the stream's observers see those that pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import httpx

from .anthropic_events import PING_EVENT, Event, provider_error
from .error_text import REASON_CHARS, public_message
from .errors import bounded_message, sse_error_event
from .health import STREAM_ERROR, TIMEOUT
from .sse import SSESplitter
from .stream_events import NO_OBSERVERS, EventSource, Observers, ProviderEvents
from .upstream import describe_exception


class StreamFailure(Exception):
    """The provider failed before the commit point: the request can go to the next provider."""

    def __init__(self, reason: str, kind: str = STREAM_ERROR):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # a failure class from health.py


@dataclass
class Opening:
    """What `hold_until_content` read: the opening up to the first content, and the rest of the same chunks."""

    held: bytes  # the opening events and the first content event, checked and observed
    rest: list[Event] = field(default_factory=list)  # whole events that came after it, not checked yet
    source: EventSource = field(default_factory=ProviderEvents)  # holds the start of an unfinished event
    observers: Observers = NO_OBSERVERS

    @property
    def after(self) -> list[bytes]:
        """The bytes of the events in `rest`."""
        return [event.raw for event in self.rest]

    @property
    def splitter(self) -> EventSource:
        """Where the rest of the stream is turned into events (`pending()`: an unfinished event's bytes)."""
        return self.source


def _held(events: list[Event], held: list[bytes], source: EventSource, observers: Observers) -> Opening | None:
    """Check and keep the opening's events; the Opening once one of them commits the answer."""
    for position, event in enumerate(events):
        if event.problem:
            if event.name != "ping":
                raise StreamFailure(bounded_message(f"invalid event before content: {event.problem}", REASON_CHARS))
            event = PING_EVENT  # clients skip pings unread: a broken one is replaced, no failure
        elif event.name == "error":
            error = provider_error(event.data)
            reason = f"{source.error_name} before content: {error.kind}"
            reason += f": {error.message}" if error.message else ""
            raise StreamFailure(bounded_message(reason, REASON_CHARS), error.failure_class)
        held.append(observers.see(event).raw)
        if event.name in source.commit_events:
            return Opening(b"".join(held), events[position + 1 :], source, observers)
    return None


async def hold_until_content(chunks: AsyncIterator[bytes], deadline: float, source: EventSource | None = None,
                             observers: Observers = NO_OBSERVERS) -> Opening:
    """Read the opening events (from `source`: by default the chunks are a provider's own Anthropic stream) until
    the first content delta, each shown to `observers` once checked.

    Raises StreamFailure for an error event or an invalid event, an end or a break before any content, or no
    content by `deadline` (a `time.monotonic()` value)."""
    source = source or ProviderEvents()
    held: list[bytes] = []
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise StreamFailure("no content before the deadline", TIMEOUT)
    try:
        async with asyncio.timeout(remaining):  # one deadline for the whole opening
            async for chunk in chunks:
                opening = _held(source.events(chunk), held, source, observers)
                if opening is not None:
                    return opening
    except TimeoutError:
        raise StreamFailure("no content before the deadline", TIMEOUT) from None
    except (httpx.HTTPError, OSError) as exc:
        raise StreamFailure(f"stream broke before any content: {describe_exception(exc)}") from None
    opening = _held(source.close(committed=False), held, source, observers)
    if opening is None:
        raise StreamFailure("stream ended before any content")
    return opening


def broke_off_reason(exc: BaseException, idle_timeout: float) -> str:
    """Why a committed stream ended early, from the provider connection's exception."""
    if isinstance(exc, httpx.ReadTimeout):
        return f"the provider's stream was idle for more than {idle_timeout:g}s"
    return f"the provider's stream broke off: {describe_exception(exc)}"


class CommittedStream:
    """The events of a stream after its commit point, checked one by one: valid events pass (shown to the
    observers); an invalid one, or the provider's `event: error`, ends the stream with an error event; after
    `message_stop` nothing more is passed on (the answer is complete). `source`: where the events come from (an
    SSESplitter: a provider's own Anthropic stream)."""

    def __init__(self, source: EventSource | SSESplitter, on_failure: Callable[[str, str], None],
                 redact: Callable[[str], str] = str, observers: Observers = NO_OBSERVERS):
        self._source: EventSource = ProviderEvents(source) if isinstance(source, SSESplitter) else source
        self._on_failure = on_failure
        self._redact = redact
        self._observers = observers
        self.complete = False  # `message_stop` went through
        self.failed = False  # the stream ended with an error event

    @property
    def over(self) -> bool:
        return self.complete or self.failed

    def feed(self, chunk: bytes) -> bytes:
        return b"" if self.over else self.take(self._source.events(chunk))

    def take(self, events: Iterable[Event | bytes]) -> bytes:
        """The events (or the bytes of whole events) as they may pass on."""
        out: list[bytes] = []
        observed = self._observers.names
        for event in events:
            if self.complete or self.failed:
                break
            if isinstance(event, bytes):
                event = Event.received(event)
            if event.problem:
                if event.name != "ping":
                    out.append(self.fail(f"the provider sent an invalid event mid-stream: {event.problem}"))
                    break
                event = PING_EVENT
            name = event.name
            if name == "error":
                out.append(self._provider_error(event))
                break
            if name in observed:
                event = self._observers.see(event)
            self.complete = name == "message_stop"
            out.append(event.raw)
        return b"".join(out)

    def end(self) -> bytes:
        """The provider's stream ended (what it leaves still counts, see `EventSource.close`), then the stream
        must have been complete."""
        if self.over:
            return b""
        out = self.take(self._source.close(committed=True))
        if not self.over:
            out += self.fail("the provider's stream ended before message_stop")
        return out

    def fail(self, reason: str) -> bytes:
        """Our own error event ends the stream."""
        message = public_message(reason, self._redact)
        self.failed = True
        self._on_failure(bounded_message(message, REASON_CHARS), STREAM_ERROR)
        return sse_error_event("api_error", message)

    def _provider_error(self, event: Event) -> bytes:
        error = provider_error(event.data, self._redact)
        message = error.message or f"the provider reported {error.kind} mid-stream"
        self.failed = True
        reason = f"{self._source.error_name} mid-stream: {error.kind}: {message}"
        self._on_failure(bounded_message(reason, REASON_CHARS), error.failure_class)
        return sse_error_event(error.kind, message)


# After `message_stop`, how long and how much of the provider's body is read to reach its end (after the client's
# stream has ended: a provider under load may send its last, empty chunk tens of milliseconds later).
END_WAIT = 2.0
END_BYTES = 64 * 1024


class Leftover:
    """What a complete stream's provider may still send after `message_stop` (its body's end): handed over by the
    guard when the client's stream ends, to be read afterwards (`drain_then_close`), so that the provider's
    connection can be kept without the client's stream waiting for it."""

    def __init__(self) -> None:
        self.rest: AsyncIterator[bytes] | None = None


_draining: set[asyncio.Task[None]] = set()  # referenced until done


def drain_then_close(leftover: Leftover | None, close: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """`close`, except for a complete stream's answer: then the rest of the provider's body is read first, in the
    background (`read_to_end`), and the answer closed after it; the caller does not wait."""

    async def closing() -> None:
        if leftover is None or leftover.rest is None:  # not a complete stream: closed at once
            await close()
            return
        rest, leftover.rest = leftover.rest, None

        async def drain() -> None:
            try:
                await read_to_end(rest)
            finally:
                await close()

        task = asyncio.get_running_loop().create_task(drain())
        _draining.add(task)
        task.add_done_callback(_draining.discard)

    return closing


async def stop_draining() -> None:
    """Shutting down: the bodies still being read are closed now."""
    tasks = list(_draining)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def read_to_end(rest: AsyncIterator[bytes], wait: float = END_WAIT, limit: int = END_BYTES) -> None:
    """What the provider sends after a complete answer, read and dropped when its end comes at once (its
    terminating chunk, usually in the same read): httpx keeps a connection only when its response was read to the
    end, so that the next stream skips a new connection. A provider that goes on, or keeps the body open, is
    closed as before: within `wait` seconds, after `limit` bytes."""
    try:
        async with asyncio.timeout(wait):
            async for chunk in rest:
                limit -= len(chunk)
                if limit < 0:
                    return
    except (TimeoutError, httpx.HTTPError, OSError):
        pass


async def guarded(
    opening: Opening,
    rest: AsyncIterator[bytes],
    on_failure: Callable[[str, str], None],
    idle_timeout: float,
    redact: Callable[[str], str] = str,
    leftover: Leftover | None = None,
) -> AsyncIterator[bytes]:
    """The held opening, then the rest of the stream as whole, checked events (`CommittedStream`), up to and with
    `message_stop`, where it ends; any failure after the commit point becomes an `event: error` at the end, reported
    through `on_failure(reason, class)`. Error messages pass through `redact`. What the provider sends after a
    complete answer is left in `leftover`, for `drain_then_close`."""
    stream = CommittedStream(opening.source, on_failure, redact, opening.observers)
    yield opening.held + stream.take(opening.rest)
    if stream.over:
        if stream.complete and leftover is not None:
            leftover.rest = rest
        return
    try:
        async for chunk in rest:
            out = stream.feed(chunk)
            if out:
                yield out
            if stream.over:
                # The answer is complete, or it failed: the client's stream ends now, whatever the provider still
                # does (closing its response stops it generating, or frees a connection it keeps open).
                if stream.complete and leftover is not None:
                    leftover.rest = rest
                return
    except (httpx.HTTPError, OSError) as exc:
        if not stream.complete:  # a connection dropped after the answer was complete is no failure
            yield stream.fail(broke_off_reason(exc, idle_timeout))
            return
    out = stream.end()
    if out:
        yield out
