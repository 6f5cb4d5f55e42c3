"""Errors in Anthropic's shape: `{"type":"error","error":{"type":..., "message":...}}`."""

from __future__ import annotations

import json
from typing import Any

# The longest error message the balancer passes on or writes (a provider may send a multi-KB traceback); long
# enough for every message Claude Code matches on ("prompt is too long: N tokens > M maximum").
MAX_MESSAGE_CHARS = 1000

# Anthropic's error type for the statuses the balancer itself produces or passes on.
ERROR_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type_for(status: int) -> str:
    if status in ERROR_TYPE_BY_STATUS:
        return ERROR_TYPE_BY_STATUS[status]
    return "invalid_request_error" if status < 500 else "api_error"


def bounded_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`message`, cut to `limit` characters (an ellipsis says it was cut)."""
    return message if len(message) <= limit else message[: limit - 1] + "…"


def bounded_error_body(body: bytes, limit: int = MAX_MESSAGE_CHARS) -> bytes:
    """A provider's error body, relayed with its message bounded: in a JSON body every string is cut to `limit`
    characters (`error.message`, and whatever a relay in front of a provider calls it), any other body is cut to
    `limit` characters of text. A body within the limit is returned as it is."""
    if len(body) <= limit:
        return body
    try:
        parsed = json.loads(body)
        bounded = _bounded_strings(parsed, limit)
    except (ValueError, RecursionError):
        text = body.decode("utf-8", "replace")
        return body if len(text) <= limit else bounded_message(text, limit).encode()
    return body if bounded == parsed else json.dumps(bounded).encode()


def _bounded_strings(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return bounded_message(value, limit)
    if isinstance(value, dict):
        return {key: _bounded_strings(item, limit) for key, item in value.items()}
    if isinstance(value, list):
        return [_bounded_strings(item, limit) for item in value]
    return value


def error_body(error_type: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()


def sse_error_event(error_type: str, message: str) -> bytes:
    """A stream-terminating `event: error`, as Anthropic sends it mid-stream."""
    return b"event: error\ndata: " + error_body(error_type, message) + b"\n\n"
