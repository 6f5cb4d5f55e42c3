"""A provider's answer handed to the relay, and the flow made to show what happened.

In the `request` hook the answer is parked in the relay and the flow pointed at it (mitmproxy collects the answer
there and streams it to the client); in `responseheaders` the flow gets the relay's stream callable, and from
then on shows the request as the provider received it (credentials redacted), not the hop to the relay.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator

import httpx
from mitmproxy import http
from mitmproxy.net.http import url as mitmproxy_url

from .dispatch import Served, client_gone
from .exchange import Answer
from .flow_record import FlowRecord, SentRequest
from .log_text import loggable
from .redact import REDACTED
from .relay import DEFERRED, RELAYED, RelayServer
from .responses import PROVIDER_HEADER
from .upstream import is_secret_header
from .usage_watch import UsageWatch, watched

log = logging.getLogger("balancer")

DEBUG_PAYLOAD_LIMIT = 8192  # bytes of a request body shown at log_level DEBUG


def sent_request(request: httpx.Request) -> SentRequest:
    return SentRequest(
        url=str(request.url),
        headers=[
            (k.decode("latin-1"), REDACTED.encode() if is_secret_header(k.decode("latin-1")) else v)
            for k, v in request.headers.raw
        ],
        body=request.content,
    )


def watched_answer(answer: Answer) -> tuple[UsageWatch, AsyncIterator[bytes]]:
    """The answer's usage watch (its own when its stream's events feed one) and its body as the relay reads it
    (the watch marks the first byte that goes out)."""
    watch = answer.watch if answer.watch is not None else UsageWatch(answer.is_sse)
    return watch, watched(answer.body, watch)


@functools.lru_cache(maxsize=256)  # providers have a few URLs; clients choose paths, so the memory is bounded
def _url_parts(url: str) -> tuple[bytes, bytes, int, bytes]:
    """mitmproxy's parse of a URL (scheme, host, port, path), remembered."""
    return mitmproxy_url.parse(url)


async def hand_off(relay: RelayServer, flow: http.HTTPFlow, record: FlowRecord, served: Served) -> None:
    """Park the provider's answer in the relay and point the flow at it."""
    result = served.result
    if not flow.live or flow.error or client_gone(flow):  # the client left while providers were tried
        await result.response.aclose()
        return
    record.provider = result.provider.name
    record.model = served.choice.model if served.choice else None
    answer = result.answer
    record.watch, body = watched_answer(answer)
    deferred = flow.metadata.get(DEFERRED)
    try:
        record.handoff = await relay.hand_off(
            answer.status, [*answer.headers, (PROVIDER_HEADER, result.provider.name)],
            body, result.response.aclose,
            is_sse=answer.is_sse, streamed=record.stream, token=deferred,
        )
    except BaseException:
        await result.response.aclose()
        raise
    sent = result.request
    if log.isEnabledFor(logging.DEBUG):
        log.debug("req %s sent to %s %s: %s", record.request_id, sent.method, loggable(str(sent.url)),
                  loggable(sent.content[:DEBUG_PAYLOAD_LIMIT].decode("utf-8", errors="replace"), limit=None))
    record.sent = sent_request(sent)
    flow.request.scheme, flow.request.host, flow.request.port = "http", "127.0.0.1", record.handoff.port
    flow.request.path = record.handoff.path
    flow.metadata[RELAYED] = True
    if not deferred:  # a deferred flow's request is on its way already: leave it as sent
        # The relay does not need the body again.
        flow.request.raw_content = b""
        flow.request.headers["content-length"] = "0"
        for name in ("content-encoding", "transfer-encoding"):
            flow.request.headers.pop(name, None)
    failed = [a for a in result.attempts if a.failed]
    flow.comment = f"served by {result.provider.name}" + (
        " after " + "; ".join(f"{a.provider}: {a.outcome}" for a in failed) if failed else ""
    )


def receive_answer(flow: http.HTTPFlow, record: FlowRecord) -> None:
    """The relay's answer has its headers (`responseheaders`): a stream is passed on through the relay's stream
    callable, and the flow shows the request as the provider received it."""
    handoff, sent = record.handoff, record.sent
    if handoff is None or sent is None or flow.response is None:
        return
    if record.stream and flow.response.headers.get("content-type", "").startswith("text/event-stream"):
        flow.response.stream = handoff.stream or True
    elif handoff.stream is not None:
        handoff.stream.release()  # not streamed: mitmproxy reads the whole answer, the relay must not wait
    # What `flow.request.url = sent.url` does, with the URL parsed once per URL, not once per request.
    flow.request.scheme, flow.request.host, flow.request.port, flow.request.path = _url_parts(sent.url)
    flow.request.headers = http.Headers([(k.encode(), v) for k, v in sent.headers])
    flow.request.raw_content = sent.body
