"""Server-sent events: splitting a byte stream into events wherever the chunk boundaries fall."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE_END = re.compile(r"\r\n|\r|\n")
# json.dumps builds an encoder on every call when given options: one, made once.
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass
class SSEEvent:
    event: str | None
    data: str
    raw: bytes  # the event's bytes including its terminating blank line

    def json(self) -> Any:
        return json.loads(self.data)


def parse_event(raw: bytes) -> SSEEvent:
    event: str | None = None
    data: list[str] = []
    # Only CR, LF and CRLF end an SSE line (str.splitlines would also split on U+2028 inside JSON).
    for line in _LINE_END.split(raw.decode("utf-8", errors="replace")):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    return SSEEvent(event=event, data="\n".join(data), raw=raw)


def format_event(event: str, data: Any) -> bytes:
    payload = _ENCODE(data)
    return f"event: {event}\ndata: {payload}\n\n".encode()


class SSESplitter:
    """Feed raw chunks, get back complete events; an event split across chunks (even mid-UTF-8) waits."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        return [parse_event(raw) for raw in self.feed_raw(chunk)]

    def feed_raw(self, chunk: bytes) -> list[bytes]:
        """Like `feed`, but each event's bytes unparsed (for a reader that only looks at some events)."""
        whole = chunk.endswith(b"\n\n") and chunk.find(b"\n\n") == len(chunk) - 2 and b"\r" not in chunk
        if whole and not self._buffer:
            # One whole event with LF line ends, as most providers send them: nothing to look for.
            return [chunk] if chunk.strip() else []
        # Only the new bytes (and the 3 before them, where a boundary may begin) can hold a new boundary:
        # rescanning the whole buffer would make one large event cost quadratic time.
        resume = max(0, len(self._buffer) - 3)
        self._buffer += chunk
        events = []
        start = 0
        for match in _BOUNDARY.finditer(self._buffer, resume):
            raw = self._buffer[start : match.end()]
            start = match.end()
            if raw.strip():
                events.append(raw)
        self._buffer = self._buffer[start:]
        return events

    def pending(self) -> bytes:
        """Bytes of an unfinished event (a stream that ended without its blank line)."""
        return self._buffer
