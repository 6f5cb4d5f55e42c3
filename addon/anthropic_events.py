"""One Anthropic stream event, what its data and an error payload hold, and whether a client can use the event
(pure, no I/O).

An `Event` is made once per event of a stream and read by every part that cares about it (the stream guard, the
usage watch, the model echo): its name is known at once, its data is parsed the first time someone reads it, and
an event the balancer wrote itself (a translation) carries its data from the start and is never parsed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .error_text import public_message
from .health import OVERLOADED, STREAM_ERROR
from .sse import format_event, parse_event

# Error types that mean capacity trouble rather than breakage.
_CAPACITY_ERRORS = frozenset({"overloaded_error", "rate_limit_error"})
# An error type passed on as the provider named it (anything else becomes `api_error`).
_ERROR_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_JSON = json.JSONDecoder()
PING = b'event: ping\ndata: {"type": "ping"}\n\n'


class Event:
    """One event of an Anthropic stream: `raw` (its bytes, as they go to the client), `name`, `data` (a JSON
    object, or None when the event has no data or unusable data) and `problem` (why a client could not use it).

    An event is usable when its data is a JSON object in UTF-8, or when it has no data at all (a comment or a
    keep-alive, which SSE clients skip)."""

    __slots__ = ("_data", "_problem", "_text", "name", "raw")

    def __init__(self, raw: bytes, name: str | None, data: dict[str, Any] | None) -> None:
        """An event whose data is known (written by the balancer): nothing to parse."""
        self.raw = raw
        self.name = name
        self._data = data
        self._problem: str | None = None
        self._text: bytes | None = None  # data not parsed yet

    @classmethod
    def made(cls, name: str, data: dict[str, Any]) -> Event:
        """An event the balancer writes."""
        try:
            raw = format_event(name, data)
        except UnicodeEncodeError:
            # A lone surrogate (a provider split an escaped surrogate pair between two chunks) cannot be UTF-8:
            # escape it in JSON instead; a JavaScript client joins the two halves again.
            raw = f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
        return cls(raw, name, data)

    @classmethod
    def received(cls, raw: bytes) -> Event:
        """An event as a provider sent it (`raw` ends with its blank line): the name now, the data when read."""
        event = cls(raw, None, None)
        name, text = _canonical(raw)
        if name is None:  # not in the form every Anthropic event has: the general SSE parse
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                event._problem = "an event that is not UTF-8"
                return event
            parsed = parse_event(raw)
            name, text = parsed.event, parsed.data.encode()
        event.name = name
        event._text = text or None
        return event

    @property
    def data(self) -> dict[str, Any] | None:
        if self._text is not None:
            self._parse(self._text)
        return self._data

    @property
    def problem(self) -> str | None:
        if self._text is not None:
            self._parse(self._text)
        return self._problem

    def _parse(self, text: bytes) -> None:
        self._text = None
        what = f"{self.name[:40] if self.name else 'an unnamed'} event"
        try:
            decoded = text.decode("utf-8").lstrip()
            payload, end = _JSON.raw_decode(decoded)  # json.loads without its wrapping layers (the hot path)
            if end != len(decoded) and decoded[end:].strip():
                raise ValueError("data after the JSON value")
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            self._problem = f"{what} whose data is not JSON"
            return
        if not isinstance(payload, dict):
            self._problem = f"{what} whose data is not a JSON object"
            return
        self._data = payload


# What a broken ping is replaced with (clients skip pings unread: a broken one is no failure).
PING_EVENT = Event(PING, "ping", {"type": "ping"})


def check_event(raw: bytes) -> Event:
    """The event `raw` holds (whole, with its blank line); its `problem` says whether a client can use it."""
    return Event.received(raw)


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


@dataclass(frozen=True)
class ProviderError:
    """A provider's `event: error` made fit to pass on and to count: the one reading of it, before and after the
    commit point, for a provider's own stream and for a translated one."""

    kind: str  # an error type in the form Anthropic's have (`api_error` when the provider's is not)
    message: str  # cleaned, redacted and bounded (error_text.public_message); "" when nothing was left

    @property
    def failure_class(self) -> str:
        return failure_class_of(self.kind)


def provider_error(data: dict[str, Any] | None, redact: Callable[[str], str] = str) -> ProviderError:
    """The error an `event: error` payload reports; its message passes through `redact`."""
    kind, message = error_of(data)
    return ProviderError(kind if _ERROR_TYPE.fullmatch(kind) else "api_error", public_message(message, redact))
