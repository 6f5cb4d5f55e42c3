"""Reads what the client is sent (Anthropic format), for the log and metrics: when the first byte went out,
token usage and the stop reason. It observes the bytes; it never changes them."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from .sse import SSESplitter, parse_event

# Non-streamed answers larger than this are not parsed for usage (they are relayed all the same).
_JSON_LIMIT = 4 * 1024 * 1024


class UsageWatch:
    def __init__(self, is_sse: bool):
        self.is_sse = is_sse
        self.first_byte_at: float | None = None  # time.perf_counter()
        self.usage: dict[str, int] = {}
        self.stop_reason: str | None = None
        self._splitter = SSESplitter() if is_sse else None
        self._body: list[bytes] = []
        self._size = 0

    def observe(self, chunk: bytes) -> None:
        if self.first_byte_at is None and chunk:
            self.first_byte_at = time.perf_counter()
        if self._splitter is not None:
            for raw in self._splitter.feed_raw(chunk):
                # Only these two events carry usage: the others are not parsed at all.
                if b"message_start" in raw or b"message_delta" in raw:
                    event = parse_event(raw)
                    if event.event in ("message_start", "message_delta"):
                        self._read_event(event.event, event.data)
        elif self._size <= _JSON_LIMIT:
            self._body.append(chunk)
            self._size += len(chunk)

    def finish(self) -> None:
        if self._splitter is None and self._size <= _JSON_LIMIT:
            try:
                message = json.loads(b"".join(self._body))
            except ValueError:
                return
            if isinstance(message, dict):
                self._take_usage(message.get("usage"))
                self.stop_reason = message.get("stop_reason") or self.stop_reason
        self._body = []

    def _read_event(self, name: str, data: str) -> None:
        try:
            payload = json.loads(data)
        except ValueError:
            return
        if not isinstance(payload, dict):
            return
        if name == "message_start" and isinstance(payload.get("message"), dict):
            self._take_usage(payload["message"].get("usage"))
        elif name == "message_delta":
            self._take_usage(payload.get("usage"))
            delta = payload.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self.stop_reason = delta["stop_reason"]

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
