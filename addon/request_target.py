"""What a request asks for, in one canonical spelling, before anything routes on it.

Every other part of the balancer (access control, the admin endpoints, the gateway's choice between the messages
handling and the generic `/v1/...` forward) decides on `flow.request.path`. A path that a provider's web server
would read differently from the balancer (`/v1/../admin`, `/v1/%2e%2e/x`, `/v1%2fmessages`, `/v1\\x`) could
otherwise reach a provider outside `<base_url>/v1/`, or reach the generic forward while meaning the messages
endpoint (skipping validation, model mapping and health accounting). So this addon runs first and either rewrites
the path to its canonical spelling or answers the request itself:

- `//v1//messages/` becomes `/v1/messages` (empty segments and a trailing slash are dropped);
- a percent-escape of an unreserved character (`%41`, `%7e`) is decoded; any other escape is refused;
- dot segments (`.`, `..`, also when escaped), backslashes and escaped slashes are refused (400);
- characters outside letters, digits and `-._~/` in the path (`;`, `:`, `@`, spaces...) get a 404: no endpoint of
  the balancer or of the Messages API is spelled with them;
- an absolute-form request line (`POST http://host/v1/messages HTTP/1.1`) is served as its origin form.

The query string is kept as the client sent it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from mitmproxy import http

from .attempt_marker import is_attempt_flow
from .flow_hygiene import client_headers
from .responses import error_response

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~/]*")
# Longest path worth looking at (Anthropic's longest endpoint path is far shorter), and query string.
MAX_PATH = 2048
MAX_QUERY = 8192
_QUERY_CHARS = re.compile(r"[\x21-\x7e]*")
# A header value the balancer cannot send on: control characters (a NUL, a bare CR or LF, an obsolete line fold).
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_problem(fields: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why a request's headers cannot be passed on to a provider (their values are never quoted), or None."""
    for name, value in fields:
        if _BAD_HEADER_VALUE.search(value.decode("latin-1")):
            return f"the value of the header {_printable(name.decode('latin-1'), 60)!r} holds a control character"
    return None


@dataclass(frozen=True)
class Canonical:
    path: str  # canonical path, without the query
    query: str  # "" or "?..." as the client sent it

    @property
    def target(self) -> str:
        return self.path + self.query


@dataclass(frozen=True)
class Refused:
    status: int  # 400 or 404
    message: str


def canonical_target(target: str) -> Canonical | Refused:
    """The canonical spelling of an origin-form request target (`/path?query`), or why it is refused."""
    path, mark, query = target.partition("?")
    if len(query) > MAX_QUERY or not _QUERY_CHARS.fullmatch(query):
        return Refused(400, "the query string must be printable ASCII (percent-encode the rest), at most "
                            f"{MAX_QUERY} characters")
    query = mark + query
    if not path.startswith("/"):
        return Refused(400, "the request target must be a path starting with /")
    if len(path) > MAX_PATH:
        return Refused(404, "no endpoint has a path that long")
    if "\\" in path:
        return Refused(400, "the path must not contain backslashes")
    problem: list[str] = []

    def decode(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        if char in _UNRESERVED:
            return char
        problem.append(match.group(0))
        return match.group(0)

    decoded = _ESCAPE.sub(decode, path)
    if problem:
        return Refused(400, f"the path must not contain escaped reserved characters ({problem[0]})")
    segments = [s for s in decoded.split("/") if s]
    if any(s in (".", "..") for s in segments):
        return Refused(400, "the path must not contain dot segments (. or ..)")
    canonical = "/" + "/".join(segments)
    if not _PATH_CHARS.fullmatch(canonical):
        return Refused(404, f"{_printable(path)} is not served by the balancer")
    return Canonical(canonical, query)


def _printable(text: str, limit: int = 120) -> str:
    """A client's path as it may appear in an answer: printable ASCII, bounded."""
    shown = "".join(c if " " < c < "\x7f" else "?" for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


# flow.metadata key of a request refused for its target (answered in the `request` hook).
REFUSED_TARGET = "balancer_refused_target"


class RequestTarget:
    """First of the balancer's hooks: every later one sees the canonical path, or the flow answered.

    The decision is made in `requestheaders`, the answer given in `request`: an answer set before the body is
    read would make mitmproxy keep the whole body (and refuse to stream one that is too large)."""

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if is_attempt_flow(flow) or flow.response or flow.error or not flow.live:
            return
        # An absolute-form request line carries an authority; the balancer routes on the path alone, and every
        # hop it makes (the relay included) is sent in origin form.
        if flow.request.authority:
            flow.request.authority = ""
        result = canonical_target(flow.request.path)
        problem = header_problem(client_headers(flow).fields)  # the real values: credentials are hidden on the flow
        if problem is not None and not isinstance(result, Refused):
            result = Refused(400, problem)
        if isinstance(result, Refused):
            flow.metadata[REFUSED_TARGET] = result
        elif result.target != flow.request.path:
            flow.request.path = result.target

    def request(self, flow: http.HTTPFlow) -> None:
        refused = flow.metadata.pop(REFUSED_TARGET, None)
        if refused is None or flow.response or flow.error or not flow.live:
            return
        error_type = "not_found_error" if refused.status == 404 else "invalid_request_error"
        flow.response = error_response(refused.status, error_type, refused.message)
