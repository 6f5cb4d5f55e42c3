"""Errors in Anthropic's shape: `{"type":"error","error":{"type":..., "message":...}}`."""

from __future__ import annotations

import json

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


def error_body(error_type: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()


def sse_error_event(error_type: str, message: str) -> bytes:
    """A stream-terminating `event: error`, as Anthropic sends it mid-stream."""
    return b"event: error\ndata: " + error_body(error_type, message) + b"\n\n"
