"""A streamed answer's Anthropic events: where they come from and who reads them.

A stream is turned into events once, by its source: an Anthropic-type provider's bytes are split into events
(`ProviderEvents`), an OpenAI-type provider's are translated into them (`openai_stream.StreamTranslator`). The
stream guard passes every event through the commit point and its checks, then shows it to the observers
registered for its name (the model echo, the usage watch): each reads the same `Event`, parsed at most once.
"""

from __future__ import annotations

from typing import Protocol

from .anthropic_events import Event
from .sse import SSESplitter

# Events after which an answer is committed to its provider (the first content, or the end of an empty answer).
COMMIT_EVENTS = frozenset({"content_block_delta", "message_delta", "message_stop"})


class EventSource(Protocol):
    """Turns a provider's chunks into Anthropic events."""

    @property
    def commit_events(self) -> frozenset[str]:
        """The first of these events commits the answer to the provider (nothing reached the client before)."""
        ...

    @property
    def error_name(self) -> str:
        """What the provider's own error is called in a failure reason ("error event", "error")."""
        ...

    def events(self, chunk: bytes) -> list[Event]:
        """The whole events `chunk` completes."""
        ...

    def close(self, committed: bool) -> list[Event]:
        """The provider's stream ended: the events that gives (an unfinished last event, a translation's end)."""
        ...

    def pending(self) -> bytes:
        """Bytes received that are not part of an event yet."""
        ...


class ProviderEvents:
    """An Anthropic-type provider's own stream, split into events."""

    commit_events = COMMIT_EVENTS
    error_name = "error event"

    def __init__(self, splitter: SSESplitter | None = None) -> None:
        self._splitter = splitter or SSESplitter()

    def events(self, chunk: bytes) -> list[Event]:
        return [Event.received(raw) for raw in self._splitter.feed_raw(chunk)]

    def close(self, committed: bool) -> list[Event]:
        """Once committed, a last event without its blank line still counts (the alternative is an error for the
        client); before, the stream is broken and the request goes to the next provider."""
        rest = self._splitter.pending().rstrip(b"\r\n")
        if not committed or not rest.strip() or Event.received(rest).problem:
            return []
        return [Event.received(rest + b"\n\n")]

    def pending(self) -> bytes:
        return self._splitter.pending()


class EventObserver(Protocol):
    """Reads (and may rewrite) the events of a stream that have one of its `names`."""

    @property
    def names(self) -> frozenset[str]: ...

    def see(self, event: Event) -> Event:
        """The event to pass on: `event` itself, or what replaces it."""
        ...


class Observers:
    """The observers of one stream, each shown only the events it reads, in the order they were given."""

    def __init__(self, *observers: EventObserver) -> None:
        by_name: dict[str, list[EventObserver]] = {}
        for observer in observers:
            for name in observer.names:
                by_name.setdefault(name, []).append(observer)
        self.names = frozenset(by_name)
        self._by_name = by_name

    def see(self, event: Event) -> Event:
        for observer in self._by_name.get(event.name or "", ()):
            event = observer.see(event)
        return event


NO_OBSERVERS = Observers()
