"""What mitmweb's flow list (and a saved flow) shows for a request the balancer answered itself.

In reverse mode mitmproxy gives every client flow the reverse target as its URL (`https://api.anthropic.com/...`,
its Host header rewritten to match), and mitmweb's list shows `scheme://Host[:port]/path`. For `/`, `/providers`,
`/metrics`, a 404, an error the balancer made or a locally counted count_tokens that is untrue: nothing went to
that host. So when such an answer is in place (`response`, before mitmweb's view and `-w` see the finished flow),
the flow is labelled with the address the client really connected to, and a comment says who answered.

A flow a provider served keeps the client's request as mitmproxy gave it (its comment names the provider); a
provider attempt's flow is the provider's own URL and is left alone.
"""

from __future__ import annotations

from mitmproxy import http

from .attempt_marker import is_attempt_flow
from .local_count import LOCAL_PROVIDER
from .relay import RELAYED
from .responses import PROVIDER_HEADER

_DEFAULT_PORTS = {"http": 80, "https": 443}


def authority(scheme: str, host: str, port: int) -> str:
    """`127.0.0.1:8080`, `[::1]:8080`; the port left out where it is the scheme's default."""
    shown = f"[{host}]" if ":" in host else host
    return shown if _DEFAULT_PORTS.get(scheme) == port else f"{shown}:{port}"


def answered_by_balancer(flow: http.HTTPFlow) -> bool:
    """The answer is the balancer's own: not relayed from a provider (or, relayed flows being parked, refused before
    the relay could take it)."""
    if is_attempt_flow(flow) or flow.response is None:
        return False
    return not flow.metadata.get(RELAYED) or flow.response.headers.get(PROVIDER_HEADER) == "none"


def own_comment(flow: http.HTTPFlow) -> str:
    assert flow.response is not None
    if flow.response.headers.get(PROVIDER_HEADER) == LOCAL_PROVIDER:
        return "counted locally by the balancer"
    return "answered by the balancer"


def label_as_own(flow: http.HTTPFlow) -> None:
    """The flow's URL and Host become the balancer's own address, as the client connected to it."""
    sockname = flow.client_conn.sockname
    if not sockname:
        return
    host, port = str(sockname[0]), int(sockname[1])
    request = flow.request
    request.scheme = "https" if flow.client_conn.tls else "http"
    request.host, request.port = host, port
    request.host_header = authority(request.scheme, host, port)
    if not flow.comment:
        flow.comment = own_comment(flow)


class OwnAnswers:
    def response(self, flow: http.HTTPFlow) -> None:
        if answered_by_balancer(flow):
            label_as_own(flow)
