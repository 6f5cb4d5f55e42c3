"""What an Anthropic stream event or error payload holds, and whether a client can use the event (pure, no I/O)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .health import OVERLOADED, STREAM_ERROR
from .sse import parse_event

# Error types that mean capacity trouble rather than breakage.
_CAPACITY_ERRORS = frozenset({"overloaded_error", "rate_limit_error"})
_JSON = json.JSONDecoder()
PING = b'event: ping\ndata: {"type": "ping"}\n\n'


@dataclass
class CheckedEvent:
    name: str | None
    data: dict[str, Any] | None  # None: the event carries no data
    problem: str | None = None  # why a client could not use the event


def check_event(raw: bytes) -> CheckedEvent:
    """An Anthropic event is usable when its data is a JSON object in UTF-8, or when it has no data at all (a
    comment or a keep-alive, which SSE clients skip)."""
    name, data = _canonical(raw)
    if name is None:  # not in the form every Anthropic event has: the general SSE parse
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return CheckedEvent(None, None, "an event that is not UTF-8")
        event = parse_event(raw)
        name, data = event.event, event.data.encode()
    if not data:
        return CheckedEvent(name, None)
    what = f"{name[:40] if name else 'an unnamed'} event"
    try:
        text = data.decode("utf-8").lstrip()
        payload, end = _JSON.raw_decode(text)  # json.loads without its wrapping layers (this is the hot path)
        if end != len(text) and text[end:].strip():
            raise ValueError("data after the JSON value")
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return CheckedEvent(name, None, f"{what} whose data is not JSON")
    if not isinstance(payload, dict):
        return CheckedEvent(name, None, f"{what} whose data is not a JSON object")
    return CheckedEvent(name, payload)


def _canonical(raw: bytes) -> tuple[str | None, bytes]:
    """(name, data) of an event written `event: NAME`, `data: DATA`, blank line (one data line, LF ends): the form
    every Anthropic event has; (None, b"") for any other form. Cheap: this runs for every event of a stream."""
    if not raw.startswith(b"event: ") or not raw.endswith(b"\n\n"):
        return None, b""
    line_end = raw.find(b"\n", 7)
    data_end = len(raw) - 2
    if not raw.startswith(b"data: ", line_end + 1) or raw.find(b"\n", line_end + 1, data_end) != -1 or b"\r" in raw:
        return None, b""
    try:
        return raw[7:line_end].decode("utf-8"), raw[line_end + 7 : data_end]
    except UnicodeDecodeError:
        return None, b""


def error_of(data: dict[str, Any] | None) -> tuple[str, str]:
    """(error type, message) of an `event: error` payload, as the provider wrote them ("" when missing)."""
    error = (data or {}).get("error")
    if isinstance(error, dict):
        kind, message = error.get("type"), error.get("message")
        return (kind if isinstance(kind, str) else "", message if isinstance(message, str) else "")
    return "", error if isinstance(error, str) else ""


def failure_class_of(error_type: str) -> str:
    return OVERLOADED if error_type in _CAPACITY_ERRORS else STREAM_ERROR
