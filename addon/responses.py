"""Answers the balancer makes by itself: JSON, and errors in Anthropic's shape. Each says it came from no
provider (`x-balancer-provider: none`)."""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import http

from .errors import error_body

PROVIDER_HEADER = "x-balancer-provider"


def json_response(status: int, payload: Any, **headers: str) -> http.Response:
    body = json.dumps(payload, indent=2).encode() + b"\n"
    return http.Response.make(status, body, {"content-type": "application/json", PROVIDER_HEADER: "none", **headers})


# Client errors a retry cannot fix: Anthropic's SDKs (Claude Code's included) honour `x-should-retry: false`
# instead of retrying them for minutes.
_FINAL_CLIENT_ERRORS = frozenset(range(400, 500)) - {408, 409, 429}


def error_response(status: int, error_type: str, message: str, **headers: str) -> http.Response:
    base = {"content-type": "application/json", PROVIDER_HEADER: "none"}
    if status in _FINAL_CLIENT_ERRORS:
        base["x-should-retry"] = "false"
    return http.Response.make(status, error_body(error_type, message), {**base, **headers})


def asks_to_read(flow: http.HTTPFlow, path: str) -> bool:
    """Whether `flow` is an unanswered GET (or HEAD) of the balancer's own read-only endpoint `path`, to be answered
    now. Another method there is answered 405 here (and False returned)."""
    if flow.response or flow.error or not flow.live or flow.request.path.split("?", 1)[0] != path:
        return False
    if flow.request.method not in ("GET", "HEAD"):
        flow.response = error_response(405, "invalid_request_error", f"{path} accepts GET only", allow="GET")
        return False
    return True
