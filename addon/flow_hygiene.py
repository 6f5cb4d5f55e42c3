"""No credential in the flows that mitmweb shows and `mitmdump -w` saves, including the client's own key.

When mitmproxy can see a flow (its own addons, which run after every addon of a script in both mitmdump and
mitmweb):
- mitmweb's view takes the flow in its `requestheaders` hook and pushes it to the browser at once; it pushes it
  again at `response`, `error` and whenever a command touches it (mark, comment, export read it any time).
- `-w` (the save addon) writes it at `response` / `error`, and flows still open when mitmproxy stops as they are.

So this addon hides the client's credentials in `requestheaders`, the first hook a flow has, before the view
has seen it, and the flow never holds them again: not while the providers are tried (a mitmweb page loaded
mid-request, an export, `save.file`), not in any answer the balancer makes itself (401, 404, /metrics, ...).
The real values stay beside the flow, never in it; the access check and the gateway read the client's headers
through `client_headers(flow)`, so what a provider receives (a passthrough provider: the client's own key) is
unchanged. In `response` / `error`, still before the save and the view's update, a last pass redacts request
header values that contain a configured secret (a provider's credential, a client or admin key), and the kept
values are dropped.

The response is left alone here: a non-streamed answer is not sent yet in `response`, so changing it would change
what the client gets. What a provider sent is redacted where it is relayed (upstream.answer_headers, error bodies);
the comment and metadata are built from redacted text.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable

from mitmproxy import http

from .attempt_marker import is_attempt_flow
from .providers import Providers
from .redact import REDACTED
from .upstream import is_secret_header

Fields = tuple[tuple[bytes, bytes], ...]
# (lower-cased name, value the flow shows) -> the real values, in header order
Kept = dict[tuple[bytes, bytes], list[bytes]]

_REDACTED = REDACTED.encode()

# The client's real header values of each flow whose headers were hidden, until the flow ends (weak: nothing is
# kept for a flow that is gone, whatever hooks it missed).
_kept: weakref.WeakKeyDictionary[http.HTTPFlow, Kept] = weakref.WeakKeyDictionary()


def shown_fields(fields: Iterable[tuple[bytes, bytes]], redact: Callable[[str], str] = str) -> tuple[Fields, Kept]:
    """The header fields as a flow may show them: a credential header's value is `[redacted]`, any other value
    passes through `redact`. Also the real values of the fields that changed."""
    shown: list[tuple[bytes, bytes]] = []
    kept: Kept = {}
    for name, value in fields:
        if is_secret_header(name.decode("latin-1")):
            new = _REDACTED
        else:
            text = value.decode("utf-8", "surrogateescape")
            redacted = redact(text)
            new = value if redacted == text else redacted.encode("utf-8", "surrogateescape")
        if new != value:
            kept.setdefault((name.lower(), new), []).append(value)
        shown.append((name, new))
    return tuple(shown), kept


def real_fields(fields: Iterable[tuple[bytes, bytes]], kept: Kept) -> Fields:
    """The fields with the values `shown_fields` replaced put back (headers added since then stay as they are)."""
    pending = {key: list(values) for key, values in kept.items()}
    real: list[tuple[bytes, bytes]] = []
    for name, value in fields:
        values = pending.get((name.lower(), value))
        real.append((name, values.pop(0) if values else value))
    return tuple(real)


def client_headers(flow: http.HTTPFlow) -> http.Headers:
    """The request headers as the client sent them (the flow itself shows credentials as `[redacted]`)."""
    kept = _kept.get(flow)
    if not kept:
        return flow.request.headers
    return http.Headers(real_fields(flow.request.headers.fields, kept))


def hide_credentials(flow: http.HTTPFlow, redact: Callable[[str], str] = str) -> None:
    """From now on the flow shows no credential of the client's; `client_headers(flow)` still has them."""
    shown, kept = shown_fields(flow.request.headers.fields, redact)
    if kept:
        flow.request.headers.fields = shown
        _kept[flow] = kept


def scrub(flow: http.HTTPFlow, redact: Callable[[str], str]) -> None:
    """The flow's last pass before it is saved or shown finished: no request header value holds a secret (the
    request as a provider received it shows that provider's extra headers)."""
    _kept.pop(flow, None)
    shown, changed = shown_fields(flow.request.headers.fields, redact)
    if changed:
        flow.request.headers.fields = shown


class FlowHygiene:
    """Registered before every addon that answers or forwards a request (see the module's comment)."""

    def __init__(self, providers: Providers):
        self.providers = providers

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # A provider attempt's flow is made without credentials (attempt_flows.py), and mitmproxy sends a replay of
        # one as the flow holds it (with the key whoever replays typed in): nothing is hidden before it goes.
        if not is_attempt_flow(flow):
            hide_credentials(flow, self.providers.redact)

    # Every flow, a replayed attempt's too: the key typed in to replay it is not kept.
    def response(self, flow: http.HTTPFlow) -> None:
        scrub(flow, self.providers.redact)

    def error(self, flow: http.HTTPFlow) -> None:
        scrub(flow, self.providers.redact)
