"""Answers carry the model the client asked for, not the provider's mapped model."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from .anthropic_events import Event
from .sse import SSESplitter

# Stop looking for `message_start` after this many bytes (it is always the first event).
_SEARCH_LIMIT = 64 * 1024


def echo_model_in_json(body: bytes, model: str) -> bytes:
    """Rewrite `model` in a non-streamed message; other bodies (errors, non-JSON) are returned as they are."""
    try:
        message = json.loads(body)
    except ValueError:
        return body
    if not isinstance(message, dict) or "model" not in message or message["model"] == model:
        return body
    message["model"] = model
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


class ModelEcho:
    """Rewrites `message.model` in a stream's `message_start` event (an observer of its events, stream_events.py);
    a `message_start` that is not in the usual form passes as it is."""

    names = frozenset({"message_start"})

    def __init__(self, model: str):
        self._model = model

    def see(self, event: Event) -> Event:
        data = event.data
        if data is None:
            return event
        message = data.get("message")
        if not isinstance(message, dict) or message.get("model") == self._model:
            return event
        return Event.made("message_start", {**data, "message": {**message, "model": self._model}})


class StreamModelEcho:
    """For a stream no guard reads event by event (an error status): rewrites `message.model` in the
    `message_start` event; every byte after it passes through untouched."""

    def __init__(self, model: str):
        self._echo = ModelEcho(model)
        self._splitter: SSESplitter | None = SSESplitter()
        self._held = 0

    def feed(self, chunk: bytes) -> bytes:
        splitter = self._splitter
        if splitter is None:
            return chunk
        self._held += len(chunk)
        events = splitter.feed_raw(chunk)
        out = []
        for i, raw in enumerate(events):
            event = Event.received(raw)
            if event.name == "message_start":
                out.append(self._echo.see(event).raw)
                out.extend(events[i + 1 :])
                out.append(self.flush())
                return b"".join(out)
            out.append(raw)
        if self._held > _SEARCH_LIMIT:
            out.append(self.flush())
        return b"".join(out)

    def flush(self) -> bytes:
        """Stop looking: return what is held back; from now on everything passes through."""
        if self._splitter is None:
            return b""
        rest = self._splitter.pending()
        self._splitter = None
        return rest


async def echo_model_in_stream(chunks: AsyncIterator[bytes], model: str) -> AsyncIterator[bytes]:
    echo = StreamModelEcho(model)
    async for chunk in chunks:
        out = echo.feed(chunk)
        if out:
            yield out
    tail = echo.flush()
    if tail:
        yield tail


async def echo_model_in_body(chunks: AsyncIterator[bytes], model: str) -> AsyncIterator[bytes]:
    body = b"".join([chunk async for chunk in chunks])
    yield echo_model_in_json(body, model)
