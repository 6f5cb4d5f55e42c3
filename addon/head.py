"""`HEAD` is answered like `GET`, without the body (Claude Code sends `HEAD /` before its first message).

The balancer's own answers are made with a body; mitmproxy writes whatever body a response holds, also to a
`HEAD` request, which leaves stray bytes on a keep-alive connection that the client reads as the start of its
next answer. So the body goes, and the headers (`content-length` included) stay as `GET` would have them.
"""

from __future__ import annotations

from mitmproxy import http

from .attempt_marker import is_attempt_flow


def without_body(response: http.Response) -> None:
    """Drop the body and keep its headers: `content-length` still says what a GET would have received."""
    if response.raw_content:
        response.headers.setdefault("content-length", str(len(response.raw_content)))
        response.raw_content = b""


class HeadRequests:
    def response(self, flow: http.HTTPFlow) -> None:
        if is_attempt_flow(flow):
            return
        if flow.request.method.upper() == "HEAD" and flow.response is not None:
            without_body(flow.response)
