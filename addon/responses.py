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


def error_response(status: int, error_type: str, message: str, **headers: str) -> http.Response:
    return http.Response.make(
        status, error_body(error_type, message), {"content-type": "application/json", PROVIDER_HEADER: "none", **headers}
    )
