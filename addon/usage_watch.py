"""Reads what the client is sent (Anthropic format), for the log and metrics: when the first byte went out,
token usage and the stop reason. It observes; it never changes what passes.

A stream the stream guard reads shows the watch its events (`see`, as an observer, stream_events.py), so the
watch splits nothing; any other answer's bytes are read here (`observe`): a stream's two events that carry usage,
or a JSON message once whole.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from .anthropic_events import Event
from .sse import SSESplitter

# Non-streamed answers larger than this are not parsed for usage (they are relayed all the same).
_JSON_LIMIT = 4 * 1024 * 1024


class UsageWatch:
    names = frozenset({"message_start", "message_delta"})  # the only events that carry usage

    def __init__(self, is_sse: bool, shown_events: bool = False):
        """`shown_events`: the stream's events are shown to `see`; the bytes need not be read."""
        self.is_sse = is_sse
        self.first_byte_at: float | None = None  # time.perf_counter()
        self.usage: dict[str, int] = {}
        self.stop_reason: str | None = None
        self._splitter = SSESplitter() if is_sse and not shown_events else None
        self._collects = not is_sse
        self._body: list[bytes] = []
        self._size = 0

    def observe(self, chunk: bytes) -> None:
        """A chunk on its way to the client."""
        if self.first_byte_at is None and chunk:
            self.first_byte_at = time.perf_counter()
        if self._splitter is not None:
            for raw in self._splitter.feed_raw(chunk):
                if b"message_start" in raw or b"message_delta" in raw:  # the others are not even named
                    event = Event.received(raw)
                    if event.name in self.names:
                        self.see(event)
        elif self._collects and self._size <= _JSON_LIMIT:
            self._body.append(chunk)
            self._size += len(chunk)

    def see(self, event: Event) -> Event:
        """One of the stream's `message_start` and `message_delta` events."""
        data = event.data
        if data is None:
            return event
        if event.name == "message_start" and isinstance(data.get("message"), dict):
            self._take_usage(data["message"].get("usage"))
        elif event.name == "message_delta":
            self._take_usage(data.get("usage"))
            delta = data.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self.stop_reason = delta["stop_reason"]
        return event

    def finish(self) -> None:
        if self._collects and self._size <= _JSON_LIMIT:
            try:
                message = json.loads(b"".join(self._body))
            except ValueError:
                return
            if isinstance(message, dict):
                self._take_usage(message.get("usage"))
                self.stop_reason = message.get("stop_reason") or self.stop_reason
        self._body = []

    def _take_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            for key in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
                if isinstance(usage.get(key), int):
                    self.usage[key] = usage[key]


async def watched(body: AsyncIterator[bytes], watch: UsageWatch) -> AsyncIterator[bytes]:
    async for chunk in body:
        watch.observe(chunk)
        yield chunk
    watch.finish()
