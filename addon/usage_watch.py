"""Reads what the client is sent (Anthropic format), for the log, the metrics and the charges: when the first byte
went out, token usage and the stop reason. It observes; it never changes what passes.

A stream reports its output tokens only in `message_delta`, near its end. A stream that ends without it (the
client left, the provider broke off) would be charged the `output_tokens` of `message_start` (often 1) for all
the content it relayed: the watch also counts the characters of the content deltas, and such a stream's usage
says at least the estimate they give (`estimated`).

A stream the stream guard reads shows the watch its events (`see`, as an observer, stream_events.py), so the
watch splits nothing; any other answer's bytes are read here (`observe`): a stream's events the watch reads, or a
JSON message once whole.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from .anthropic_events import Event
from .sse import SSESplitter

# The fields of a content delta that are output the model wrote (a signature is not: it is opaque data).
_DELTA_TEXT = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}
# Characters of output per token, for the estimate (English text and code run at about 4).
CHARS_PER_TOKEN = 4

# Non-streamed answers larger than this are not parsed for usage (they are relayed all the same).
_JSON_LIMIT = 4 * 1024 * 1024


def estimated_tokens(chars: int) -> int:
    """Output tokens estimated from characters of output, rounded up."""
    return -(-chars // CHARS_PER_TOKEN) if chars > 0 else 0


def delta_chars(data: dict[str, Any]) -> int:
    """Characters of output in a `content_block_delta` event's data."""
    delta = data.get("delta")
    if not isinstance(delta, dict):
        return 0
    kind = delta.get("type")
    field = _DELTA_TEXT.get(kind) if isinstance(kind, str) else None
    text = delta.get(field) if field is not None else None
    return len(text) if isinstance(text, str) else 0


class UsageWatch:
    # The events that carry usage, the content (for the estimate) and the answer's end.
    names = frozenset({"message_start", "message_delta", "content_block_delta", "message_stop"})

    def __init__(self, is_sse: bool, shown_events: bool = False):
        """`shown_events`: the stream's events are shown to `see`; the bytes need not be read."""
        self.is_sse = is_sse
        self.first_byte_at: float | None = None  # time.perf_counter()
        self.usage: dict[str, int] = {}
        self.stop_reason: str | None = None
        self.answered = False  # the answer's `message_delta` or `message_stop` went through: its content is over
        self.estimated = False  # `usage` holds an estimate of the output tokens, not what the provider reported
        self.final_usage = False  # the answer's own last word on its usage came (message_delta, a whole message)
        self.output_chars = 0  # characters of the content deltas relayed
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
                if b"message_" in raw or b"content_block_delta" in raw:  # the others are not even named
                    event = Event.received(raw)
                    if event.name in self.names:
                        self.see(event)
        elif self._collects and self._size <= _JSON_LIMIT:
            self._body.append(chunk)
            self._size += len(chunk)

    def see(self, event: Event) -> Event:
        """One of the stream's events named in `names`."""
        name = event.name
        if name in ("message_delta", "message_stop"):
            self.answered = True
        data = event.data
        if data is None:
            return event
        if name == "content_block_delta":
            self.output_chars += delta_chars(data)
        elif name == "message_start" and isinstance(data.get("message"), dict):
            self._take_usage(data["message"].get("usage"))
        elif name == "message_delta":
            usage = data.get("usage")
            self._take_usage(usage)
            if isinstance(usage, dict) and isinstance(usage.get("output_tokens"), int):
                self.final_usage = True
            delta = data.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self.stop_reason = delta["stop_reason"]
        return event

    def finish(self) -> None:
        """The answer is over (or the client left): its usage is settled (this may be called again)."""
        if self._collects and self._size <= _JSON_LIMIT and self._body:
            try:
                message = json.loads(b"".join(self._body))
            except ValueError:
                message = None
            if isinstance(message, dict):
                self._take_usage(message.get("usage"))
                self.final_usage = True
                self.stop_reason = message.get("stop_reason") or self.stop_reason
        self._body = []
        if not self.final_usage:
            self._estimate()

    def _estimate(self) -> None:
        """No final usage: the output tokens are at least what the content relayed is estimated at (the reported
        count stays when higher; the estimate replaces it, never adds to it)."""
        estimate = estimated_tokens(self.output_chars)
        if estimate > self.usage.get("output_tokens", 0):
            self.usage["output_tokens"] = estimate
            self.estimated = True

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
