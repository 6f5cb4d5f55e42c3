"""A request body never costs more memory than `settings.max_body_size`, compressed or not.

mitmproxy reads a request body it is not told to stream into memory whole before the `request` hook, even when
an addon has already answered; and where its own `body_size_limit` stops reading, the client is left blocked on
its upload. So the balancer decides in `requestheaders`, before the body is read:

- `content-length` over the limit: mitmproxy's `stream_large_bodies` (kept at `max_body_size`) has already marked
  the body for streaming; it is streamed to the RefusalServer, which answers an Anthropic-shaped `413` and
  discards it. Nothing is kept.
- no `content-length` (a chunked body): the body is streamed too, through a Collector that keeps it up to the
  limit and drops it past the limit, towards the relay under a token chosen now. The request hooks then run as
  for any request (the `request` hook puts the collected body back on the flow); whatever answers it — the
  gateway parking a provider's answer under that token, or any addon setting `flow.response`, which
  DeferredAnswers parks there — the relay serves it once the body has ended.
- a body with `content-encoding` is decoded here, in a worker thread, with a cap on the decoded size
  (body_decoding.py); nothing later ever inflates a body. Over the cap: `413`; not decodable: `400`; an unknown
  encoding: `415`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

from mitmproxy import ctx, http

from .attempt_marker import is_attempt_flow
from .body_decoding import TooLarge, Undecodable, UnknownEncoding, decode_body
from .providers import Providers
from .refusal_server import RefusalServer
from .relay import DEFERRED, PATH_PREFIX, Parked, RelayServer
from .responses import error_response

# flow.metadata keys: a body refused for its size; where a deferred flow was really headed (restored for the hooks).
REFUSED = "balancer_body_refused"
_TARGET = "balancer_target"


def _discard(data: bytes) -> list[bytes]:
    return []


class Collector:
    """mitmproxy's stream callable for a body of unknown length: keeps it up to `limit` bytes, forgets it past
    that, and passes nothing on (the relay does not need it)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.size = 0
        self.over = False
        # One buffer, not a list of chunks: a client sending one-byte chunks must not cost a Python object each.
        self._body = bytearray()

    def __call__(self, data: bytes) -> list[bytes]:
        self.size += len(data)
        if self.size > self.limit:
            self.over = True
            self._body = bytearray()
        else:
            self._body += data
        return []

    def body(self) -> bytes:
        return bytes(self._body)


class BodyLimits:
    def __init__(self, providers: Providers, relay: RelayServer):
        self.providers = providers
        self.relay = relay
        self.refusals = RefusalServer()
        providers.on_apply.append(self._sync_option)

    async def running(self) -> None:
        await self.refusals.start()
        self._sync_option()

    async def done(self) -> None:
        await self.refusals.stop()

    def _sync_option(self) -> None:
        """mitmproxy streams a body over `stream_large_bodies` instead of keeping it: keep it at `max_body_size`."""
        limit = self.providers.settings.max_body_size
        self.refusals.message = f"request body over the {limit}-byte limit"
        if "stream_large_bodies" in ctx.options and ctx.options.stream_large_bodies != str(limit):
            ctx.options.update(stream_large_bodies=str(limit))

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if is_attempt_flow(flow) or flow.response or flow.error or not flow.live:
            return
        request = flow.request
        if request.stream:  # mitmproxy marked it: the content-length is over the limit
            port = self.refusals.port or await self.refusals.start()  # a client can be quicker than `running`
            flow.metadata[_TARGET] = (request.scheme, request.host, request.port, request.path)
            request.scheme, request.host, request.port = "http", "127.0.0.1", port
            request.stream = _discard  # the answer does not depend on the body: nothing crosses the loopback
            flow.metadata[REFUSED] = True
        elif "content-length" not in request.headers and "chunked" in request.headers.get("transfer-encoding", ""):
            port = self.relay.port or await self.relay.start()
            token = secrets.token_urlsafe(18)
            flow.metadata[_TARGET] = (request.scheme, request.host, request.port, request.path)
            flow.metadata[DEFERRED] = token
            request.scheme, request.host, request.port, request.path = "http", "127.0.0.1", port, PATH_PREFIX + token
            request.stream = Collector(self.providers.settings.max_body_size)

    async def request(self, flow: http.HTTPFlow) -> None:
        if is_attempt_flow(flow) or flow.error or not flow.live:
            return
        request = flow.request
        limit = self.providers.settings.max_body_size
        collector = request.stream if isinstance(request.stream, Collector) else None
        if _TARGET in flow.metadata:
            # The request line went out to the relay or the sink already; the hooks (and mitmweb) see where it was
            # really headed.
            request.scheme, request.host, request.port, request.path = flow.metadata.pop(_TARGET)
        if collector is not None:
            request.raw_content = b"" if collector.over else collector.body()
        if flow.response:
            return
        raw = request.raw_content or b""
        # A body over the limit was not kept, and the RefusalServer (or the relay, for a chunked one) answers it:
        # nobody else may act on the flow. The same answer here covers an option changed by hand.
        if flow.metadata.get(REFUSED) or (collector is not None and collector.over) or len(raw) > limit:
            flow.metadata[REFUSED] = True
            flow.response = error_response(413, "request_too_large", f"request body over the {limit}-byte limit")
            return
        encoding = request.headers.get("content-encoding", "")
        if not raw or not encoding.strip():
            return
        try:
            decoded = await asyncio.to_thread(decode_body, raw, encoding, limit)
        except TooLarge:
            flow.response = error_response(
                413, "request_too_large", f"request body over the {limit}-byte limit once decoded ({encoding})"
            )
            return
        except UnknownEncoding as exc:
            flow.response = error_response(
                415, "invalid_request_error",
                f"unsupported content-encoding {str(exc)[:40]!r} (gzip, deflate, br and zstd are)",
            )
            return
        except Undecodable as exc:
            flow.response = error_response(
                400, "invalid_request_error", f"the request body is not valid {encoding[:40]}: {str(exc)[:120]}"
            )
            return
        request.headers.pop("content-encoding", None)
        request.raw_content = decoded
        if "content-length" in request.headers:
            request.headers["content-length"] = str(len(decoded))


class DeferredAnswers:
    """The last request hook: a flow whose body was streamed to the relay (a chunked body) is answered by the
    relay, so an answer an addon set on the flow is parked there under the flow's token. mitmproxy then reads
    that same answer back from the relay; the gateway parks its provider answers there itself."""

    def __init__(self, relay: RelayServer):
        self.relay = relay

    async def _close(self) -> None:
        return None

    def request(self, flow: http.HTTPFlow) -> None:
        token = flow.metadata.get(DEFERRED)
        if token is None or self.relay.holds(token):
            return
        response = flow.response or error_response(500, "api_error", "nothing answered this request")
        headers = [(k, v) for k, v in response.headers.items(multi=True)
                   if k.lower() not in ("content-length", "transfer-encoding")]
        body = response.raw_content or b""
        self.relay.park(Parked(response.status_code, headers, _once(body), self._close), token=token)

    async def error(self, flow: http.HTTPFlow) -> None:
        token = flow.metadata.get(DEFERRED)
        if token is not None:
            await self.relay.discard(token)


async def _once(body: bytes) -> AsyncIterator[bytes]:
    if body:
        yield body
