"""The last addon: whatever no other part of the balancer answered gets a 404 in Anthropic's shape, so that
nothing ever goes on to mitmproxy's reverse-proxy target by accident."""

from __future__ import annotations

from mitmproxy import http

from .attempt_marker import is_attempt_flow
from .relay import RELAYED
from .responses import error_response


class NotFound:
    def request(self, flow: http.HTTPFlow) -> None:
        if is_attempt_flow(flow) or flow.response or flow.error or not flow.live or flow.metadata.get(RELAYED):
            return
        path = flow.request.path.split("?", 1)[0]
        flow.response = error_response(
            404,
            "not_found_error",
            f"{flow.request.method} {path} is not served by the balancer "
            "(API requests go to /v1/...; see GET /providers)",
        )
