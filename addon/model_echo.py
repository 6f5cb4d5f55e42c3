"""Answers carry the model the client asked for, not the provider's mapped model."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from .sse import SSESplitter, format_event

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


class StreamModelEcho:
    """Rewrites `message.model` in the `message_start` event; every byte after it passes through untouched."""

    def __init__(self, model: str):
        self._model = model
        self._splitter: SSESplitter | None = SSESplitter()
        self._held = 0

    def feed(self, chunk: bytes) -> bytes:
        splitter = self._splitter
        if splitter is None:
            return chunk
        self._held += len(chunk)
        events = splitter.feed(chunk)
        out = []
        for i, event in enumerate(events):
            if event.event == "message_start":
                out.append(self._rewrite(event.raw, event.data))
                out.extend(later.raw for later in events[i + 1 :])
                out.append(self.flush())
                return b"".join(out)
            out.append(event.raw)
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

    def _rewrite(self, raw: bytes, data: str) -> bytes:
        try:
            payload = json.loads(data)
            message = payload["message"]
            if message.get("model") == self._model:
                return raw
            message["model"] = self._model
        except (ValueError, KeyError, TypeError, AttributeError):
            return raw
        return format_event("message_start", payload)


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
