"""A provider's answer handed to the client, and the flow made to show what happened.

An answer the adapter read whole (a JSON message, an error) becomes the flow's response in the `request` hook:
mitmproxy sends it in one piece, with no hop to the relay. Any other is parked in the relay and the flow pointed at
it (mitmproxy collects the answer there and streams it to the client); in `responseheaders` the flow gets the
relay's stream callable, and from then on shows the request as the client sent it again, not the hop to the
relay. What each provider received is its attempt's own flow (attempt_flows.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
from mitmproxy import http

from .dispatch import Served, client_gone
from .exchange import Answer
from .failover import AttemptRecord
from .flow_record import ClientRequest, FlowRecord
from .log_text import loggable
from .relay import DEFERRED, RELAYED, RelayServer
from .responses import PROVIDER_HEADER
from .server_tools import DROPPED_TOOLS_HEADER
from .stream_guard import drain_then_close
from .usage_watch import UsageWatch, watched

log = logging.getLogger("balancer")

DEBUG_PAYLOAD_LIMIT = 8192  # bytes of a request body shown at log_level DEBUG


def client_request(request: http.Request) -> ClientRequest:
    return ClientRequest(request.scheme, request.host, request.port, request.path, request.headers.fields,
                         request.raw_content)


def watched_answer(answer: Answer) -> tuple[UsageWatch, AsyncIterator[bytes]]:
    """The answer's usage watch (its own when its stream's events feed one) and its body as the relay reads it
    (the watch marks the first byte that goes out)."""
    watch = answer.watch if answer.watch is not None else UsageWatch(answer.is_sse)
    return watch, watched(answer.body, watch)


def show_client_request(flow: http.HTTPFlow, record: FlowRecord) -> None:
    """The flow shows the client's request again, not the hop to the relay."""
    shown = record.client_request
    if shown is None:
        return
    request = flow.request
    request.scheme, request.host, request.port, request.path = shown.scheme, shown.host, shown.port, shown.path
    request.headers.fields = shown.headers
    request.raw_content = shown.raw_content


async def hand_off(relay: RelayServer, flow: http.HTTPFlow, record: FlowRecord, served: Served) -> None:
    """The provider's answer becomes the flow's response when it was read whole; otherwise it is parked in the
    relay and the flow pointed at it. A deferred flow (its request already on its way to the relay) always gets
    its answer there."""
    result = served.result
    if not flow.live or flow.error or client_gone(flow):  # the client left while providers were tried
        await result.response.aclose()
        return
    record.provider = result.provider.name
    record.model = served.choice.model if served.choice else None
    answer = result.answer
    record.watch, body = watched_answer(answer)
    watch = record.watch
    record.dropped_tools = answer.dropped_tools
    headers = [*answer.headers, (PROVIDER_HEADER, result.provider.name)]
    if answer.dropped_tools:
        headers.append((DROPPED_TOOLS_HEADER, ", ".join(answer.dropped_tools)))
    record.served = True
    deferred = flow.metadata.get(DEFERRED)
    if answer.whole and not deferred:
        flow.response = await whole_response(answer.status, headers, body, result.response.aclose)
        flow.metadata[RELAYED] = True  # a provider's answer: no other addon answers the flow
        flow.comment = served_comment(result.provider.name, result.attempts)
        _log_sent(record, result.request)
        return
    try:
        record.handoff = await relay.hand_off(
            answer.status, headers,
            # A complete stream's provider connection is kept: its body's end is read after the client's.
            body, drain_then_close(answer.leftover, result.response.aclose),
            is_sse=answer.is_sse, streamed=record.stream, token=deferred, keepalive=answer.keepalive,
            answered=lambda: watch.answered,  # message_delta or message_stop went through
        )
    except BaseException:
        await result.response.aclose()
        raise
    _log_sent(record, result.request)
    record.client_request = client_request(flow.request)
    flow.request.scheme, flow.request.host, flow.request.port = "http", "127.0.0.1", record.handoff.port
    flow.request.path = record.handoff.path
    flow.metadata[RELAYED] = True
    if not deferred:  # a deferred flow's request is on its way already: leave it as sent
        # The relay does not need the body again.
        flow.request.raw_content = b""
        flow.request.headers["content-length"] = "0"
        for name in ("content-encoding", "transfer-encoding"):
            flow.request.headers.pop(name, None)
    flow.comment = served_comment(result.provider.name, result.attempts)


async def whole_response(status: int, headers: list[tuple[str, str]], body: AsyncIterator[bytes],
                         close: Callable[[], Awaitable[None]]) -> http.Response:
    """The response of an answer read whole (its body iterator waits for nothing); the provider's connection is
    released."""
    try:
        content = b"".join([chunk async for chunk in body])
    finally:
        await close()
    fields = [(name.encode("latin-1", "replace"), value.encode("latin-1", "replace")) for name, value in headers]
    return http.Response.make(status, content, http.Headers(fields))  # with its content-length


def _log_sent(record: FlowRecord, sent: httpx.Request) -> None:
    if log.isEnabledFor(logging.DEBUG):
        log.debug("req %s sent to %s %s: %s", record.request_id, sent.method, loggable(str(sent.url)),
                  loggable(sent.content[:DEBUG_PAYLOAD_LIMIT].decode("utf-8", errors="replace"), limit=None))


def served_comment(provider: str, attempts: list[AttemptRecord]) -> str:
    """`served by b (attempt 2 of 2) after a: HTTP 529 ...`; `served by b (a hedge: a called off)` when it won a race
    (hedging.py); with one attempt, `served by a`."""
    failed = [a for a in attempts if a.failed]
    raced = any(a.hedge for a in attempts)
    # In a race, another provider's attempt that did not fail was called off (providers are never asked twice).
    set_aside = [a for a in attempts[:-1] if raced and not a.failed and a.provider != provider]
    if set_aside:
        which = f" (a hedge: {', '.join(dict.fromkeys(a.provider for a in set_aside))} called off)"
    else:
        which = f" (attempt {len(attempts)} of {len(attempts)})" if len(attempts) > 1 else ""
    return f"served by {provider}{which}" + (
        " after " + "; ".join(f"{a.provider}: {a.outcome}" for a in failed) if failed else ""
    )


def receive_answer(flow: http.HTTPFlow, record: FlowRecord) -> None:
    """The relay's answer has its headers (`responseheaders`): a stream is passed on through the relay's stream
    callable, and the flow shows the client's request again."""
    handoff = record.handoff
    if handoff is None or flow.response is None:
        return
    if record.stream and flow.response.headers.get("content-type", "").startswith("text/event-stream"):
        flow.response.stream = handoff.stream or True
    elif handoff.stream is not None:
        handoff.stream.release()  # not streamed: mitmproxy reads the whole answer, the relay must not wait
    show_client_request(flow, record)
